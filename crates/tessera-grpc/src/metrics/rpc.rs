//! RPC latency by method and status code: a tower layer (see the stack in
//! the `tessera` crate's `app.rs`) and the histograms it fills.
//!
//! Every series exists from the start, one per (method, code), so
//! recording is an index computation and three atomic adds: no lock, no
//! map insert. Methods come from the contract's descriptor set, plus gRPC
//! health and reflection; any other path is counted as `other`, so a
//! client cannot create series by inventing paths. Only series that have
//! seen a call are exposed.

use super::histogram::AtomicHistogram;
use crate::gate::is_grpc;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tonic::body::Body;
use tonic::{Code, Status};

/// gRPC status codes by number, as the `code` label shows them.
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Standard services every instance serves beside the contract.
const STANDARD: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// One RPC: its path and the labels it is shown with.
#[derive(Debug)]
pub struct Method {
    path: String,
    /// The full service name (`tessera.v1.IssuerService`).
    pub service: String,
    /// The method name (`Refresh`).
    pub name: String,
}

impl Method {
    /// `/service/method`.
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Every RPC this server knows: the contract's (from its descriptor set),
/// gRPC health and reflection. Built once; read without a lock.
#[derive(Debug)]
pub struct Methods(Vec<Method>);

impl Methods {
    /// The RPCs of `contract` (an encoded `FileDescriptorSet`), health and
    /// reflection.
    pub fn new(contract: &[u8]) -> Self {
        use prost::Message as _;
        let mut paths: Vec<String> = STANDARD.iter().map(|p| (*p).to_owned()).collect();
        if let Ok(set) = prost_types::FileDescriptorSet::decode(contract) {
            for file in &set.file {
                for service in &file.service {
                    for method in &service.method {
                        paths.push(format!(
                            "/{}.{}/{}",
                            file.package(),
                            service.name(),
                            method.name()
                        ));
                    }
                }
            }
        }
        paths.sort();
        paths.dedup();
        Self(
            paths
                .into_iter()
                .filter_map(|path| {
                    let (service, name) = path.strip_prefix('/')?.split_once('/')?;
                    let (service, name) = (service.to_owned(), name.to_owned());
                    Some(Method {
                        path,
                        service,
                        name,
                    })
                })
                .collect(),
        )
    }

    /// The index of `path`, when it is a known RPC.
    fn index(&self, path: &str) -> Option<usize> {
        self.0.binary_search_by(|m| m.path.as_str().cmp(path)).ok()
    }

    /// The RPC at `path`, when it is a known one.
    pub fn get(&self, path: &str) -> Option<&Method> {
        self.index(path).and_then(|i| self.0.get(i))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// The latency histograms of every (method, code).
#[derive(Debug)]
pub struct RpcLatency {
    /// `other` is the index one past the end.
    methods: Arc<Methods>,
    histograms: Vec<AtomicHistogram>,
}

impl RpcLatency {
    /// Histograms for every method of `methods`, and `other`.
    pub fn new(methods: Arc<Methods>) -> Self {
        let histograms = (0..(methods.len() + 1) * CODES.len())
            .map(|_| AtomicHistogram::default())
            .collect();
        Self {
            methods,
            histograms,
        }
    }

    /// The index of `path` (`other` when unknown).
    fn method(&self, path: &str) -> usize {
        self.methods.index(path).unwrap_or(self.methods.len())
    }

    fn observe(&self, method: usize, code: usize, took: Duration) {
        let i = method * CODES.len() + code.min(CODES.len() - 1);
        if let Some(h) = self.histograms.get(i) {
            h.observe(took);
        }
    }

    #[cfg(test)]
    pub(crate) fn observe_for_test(&self, path: &str, code: usize, took: Duration) {
        self.observe(self.method(path), code, took);
    }

    /// Calls recorded for `path` answered with `code` (for tests).
    pub fn count(&self, path: &str, code: Code) -> u64 {
        let i = self.method(path) * CODES.len() + code as usize;
        self.histograms.get(i).map_or(0, AtomicHistogram::count)
    }
}

impl Collector for RpcLatency {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "tessera_rpc_duration",
            "gRPC calls by service, method and status code: time from the request's arrival to the status sent (a stream: its whole life).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (i, h) in self.histograms.iter().enumerate() {
            if h.count() == 0 {
                continue;
            }
            let (service, name) = self
                .methods
                .0
                .get(i / CODES.len())
                .map_or(("other", "other"), |m| (&m.service, &m.name));
            let labels = [
                ("service", service),
                ("method", name),
                ("code", CODES[i % CODES.len()]),
            ];
            h.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The status code a response header map (trailers-only) or trailers
/// carry; `None` when there is none.
fn code_of(headers: &http::HeaderMap) -> Option<usize> {
    let v = headers.get("grpc-status")?;
    Some(
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|c| *c < CODES.len())
            .unwrap_or(Code::Unknown as usize),
    )
}

/// Layer: time every gRPC call (see the module).
#[derive(Debug, Clone)]
pub struct RecordRpc {
    table: Arc<RpcLatency>,
}

impl RecordRpc {
    /// Records into `table`.
    pub fn new(table: Arc<RpcLatency>) -> Self {
        Self { table }
    }
}

impl<S> tower::Layer<S> for RecordRpc {
    type Service = RecordedRpc<S>;
    fn layer(&self, inner: S) -> Self::Service {
        RecordedRpc {
            inner,
            table: self.table.clone(),
        }
    }
}

/// Service of [`RecordRpc`].
#[derive(Debug, Clone)]
pub struct RecordedRpc<S> {
    inner: S,
    table: Arc<RpcLatency>,
}

impl<S, B> tower::Service<http::Request<B>> for RecordedRpc<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    // Unpin (the layers below box theirs): no second allocation here.
    S::Future: Send + Unpin + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Recording<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let pending = is_grpc(&req).then(|| Pending {
            table: self.table.clone(),
            method: self.table.method(req.uri().path()),
            start: Instant::now(),
            recorded: false,
        });
        Recording {
            call: self.inner.call(req),
            pending,
        }
    }
}

/// A call being timed (`None`: not a gRPC call).
pub struct Recording<F> {
    call: F,
    pending: Option<Pending>,
}

impl<F, E> Future for Recording<F>
where
    F: Future<Output = Result<http::Response<Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.get_mut();
        let response = match Pin::new(&mut me.call).poll(cx) {
            Poll::Ready(Ok(r)) => r,
            other => return other,
        };
        let Some(mut pending) = me.pending.take() else {
            return Poll::Ready(Ok(response));
        };
        // An error before any message is a trailers-only response: the
        // status is in the headers and the call is over.
        if let Some(code) = code_of(response.headers()) {
            pending.finish(code);
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(response.map(|body| Body::new(Timed { body, pending }))))
    }
}

/// A call whose status is still to come. Dropped before it is known (the
/// client went away), it is recorded as CANCELLED.
struct Pending {
    table: Arc<RpcLatency>,
    method: usize,
    start: Instant,
    recorded: bool,
}

impl Pending {
    fn finish(&mut self, code: usize) {
        if !std::mem::replace(&mut self.recorded, true) {
            self.table.observe(self.method, code, self.start.elapsed());
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish(Code::Cancelled as usize);
    }
}

/// A response body that records its call when the status goes out.
struct Timed {
    body: Body,
    pending: Pending,
}

impl http_body::Body for Timed {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let me = self.get_mut();
        let polled = Pin::new(&mut me.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    me.pending
                        .finish(code_of(trailers).unwrap_or(Code::Unknown as usize));
                }
            }
            Poll::Ready(Some(Err(status))) => me.pending.finish(status.code() as usize),
            Poll::Ready(None) => me.pending.finish(Code::Unknown as usize),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_come_from_the_contract_and_unknown_paths_are_other() {
        let methods = Arc::new(Methods::new(tessera_proto::FILE_DESCRIPTOR_SET));
        let verify = methods
            .get("/tessera.v1.IntrospectionService/Verify")
            .unwrap();
        assert_eq!(verify.service, "tessera.v1.IntrospectionService");
        assert_eq!(verify.name, "Verify");
        assert!(methods.get("/grpc.health.v1.Health/Check").is_some());
        assert!(methods.get("/made.up/Path").is_none());
        // Every RPC of the contract is known (13 today), and the 4 standard.
        assert!(methods.len() >= 17, "{}", methods.len());
        let t = RpcLatency::new(methods.clone());
        assert_eq!(t.method("/made.up/Path"), methods.len());
    }

    #[test]
    fn a_status_is_read_from_headers_or_trailers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(code_of(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(code_of(&h), Some(16));
        h.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(code_of(&h), Some(Code::Unknown as usize));
    }
}
