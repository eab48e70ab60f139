//! W3C trace context (`traceparent`, `tracestate`) across Tessera's own
//! calls, so that one trace shows a request end to end: a refresh-token
//! reuse caught by the issuer, and the `Revoke{family_id}` it sends the
//! revocation service; a `Revoke{kid}` on a verifier and the issuer's
//! `CompromiseKey`.
//!
//! Only the OpenTelemetry API is used here. The propagator and the tracer
//! are installed by the binary when OTLP export is on; without them (the
//! default, and every library test) [`inject`] writes nothing and the
//! server layer steps aside.

use crate::gate::is_grpc;
use crate::metrics::rpc::Methods;
use opentelemetry::propagation::{Extractor, Injector};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Writes the current span's trace context into an outgoing call's
/// metadata (client side; see `net::Bearer`).
pub fn inject(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut MetadataInjector(metadata));
    });
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key)?.to_str().ok()
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Layer (position 2 of the stack): every call to one of Tessera's own
/// RPCs runs in a server span whose parent is the caller's trace context.
/// Health and reflection are not traced (balancers call them every few
/// seconds); unknown paths neither, so span names stay few. Its fields
/// are the RPC's names and status code, never a request field.
#[derive(Debug, Clone)]
pub struct Propagate {
    methods: Option<Arc<Methods>>,
}

impl Propagate {
    /// Traces the RPCs of `methods` when `on` (OTLP export configured);
    /// otherwise passes every call straight through.
    pub fn new(methods: Arc<Methods>, on: bool) -> Self {
        Self {
            methods: on.then_some(methods),
        }
    }
}

impl<S> tower::Layer<S> for Propagate {
    type Service = Propagated<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Propagated {
            inner,
            methods: self.methods.clone(),
        }
    }
}

/// Service of [`Propagate`].
#[derive(Debug, Clone)]
pub struct Propagated<S> {
    inner: S,
    methods: Option<Arc<Methods>>,
}

/// The server span of a call to `method`, child of the context `headers`
/// carry.
fn server_span(method: &crate::metrics::rpc::Method, headers: &http::HeaderMap) -> tracing::Span {
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)));
    let span = tracing::info_span!(
        target: "tessera::rpc",
        "grpc.server",
        otel.name = method.path().trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = method.service.as_str(),
        rpc.method = method.name.as_str(),
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    // Fails only when no OpenTelemetry layer is installed: then there is
    // no trace to join.
    let _ = span.set_parent(parent);
    span
}

/// Records the call's status on its span: the server's own failures are
/// errors (OpenTelemetry's gRPC conventions); a refusal of the caller's
/// request is not.
fn record_status(span: &tracing::Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i64);
    if matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    ) {
        span.record("otel.status_code", "ERROR");
    }
}

fn code_of(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from_i32(v.parse().unwrap_or(Code::Unknown as i32)))
}

impl<S, B> tower::Service<http::Request<B>> for Propagated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    // Unpin (the layer below is): an untraced call costs no allocation.
    S::Future: Send + Unpin + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Propagating<S::Future, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let span = self
            .methods
            .as_ref()
            .filter(|_| is_grpc(&req))
            .and_then(|m| m.get(req.uri().path()))
            .filter(|m| !m.service.starts_with("grpc."))
            .map(|m| server_span(m, req.headers()));
        let Some(span) = span else {
            return Propagating::Plain(self.inner.call(req));
        };
        let call = span.in_scope(|| self.inner.call(req));
        let instrumented = span.clone();
        Propagating::Traced(Box::pin(
            async move {
                let response = call.await?;
                // A trailers-only response (an error before any message)
                // carries its status in the headers; any other, in its
                // trailers: the span lasts until they are sent.
                if let Some(code) = code_of(response.headers()) {
                    record_status(&span, code);
                    return Ok(response);
                }
                Ok(response.map(|body| Body::new(Traced { body, span })))
            }
            .instrument(instrumented),
        ))
    }
}

/// A call, traced or passed through.
pub enum Propagating<F, E> {
    /// Not traced: the inner call as it is.
    Plain(F),
    /// In its server span.
    Traced(BoxFuture<http::Response<Body>, E>),
}

impl<F, E> Future for Propagating<F, E>
where
    F: Future<Output = Result<http::Response<Body>, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Plain(f) => Pin::new(f).poll(cx),
            Self::Traced(f) => f.as_mut().poll(cx),
        }
    }
}

/// A response body that holds its call's span open until the status is
/// sent, and records it.
struct Traced {
    body: Body,
    span: tracing::Span,
}

impl http_body::Body for Traced {
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
                if let Some(code) = frame.trailers_ref().and_then(code_of) {
                    record_status(&me.span, code);
                }
            }
            Poll::Ready(Some(Err(status))) => record_status(&me.span, status.code()),
            _ => {}
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
