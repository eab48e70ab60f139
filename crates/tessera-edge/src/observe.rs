//! [`Observe`]: the one layer that observes each call. It reads a call's
//! method when it arrives, its caller and gRPC status when it is answered
//! (in the response headers of a trailers-only answer, else in the
//! trailers) and its latency, once, and feeds every consumer from that one
//! observation: the latency histogram by method and code, the server span
//! (with OTLP export on), the debug log of error statuses, and for a call
//! the edge refused itself ([`Refusal`]) the shed counter or the audit
//! record. A call dropped before its status (the client went away) is
//! recorded as CANCELLED.
//!
//! It also gives tonic's bare `OUT_OF_RANGE` for a message over a
//! service's decoding limit (the only `OUT_OF_RANGE` Tessera sends) an
//! ErrorInfo and the field, as `INVALID_ARGUMENT` like every other bad
//! input; the call is recorded with the status the caller receives.

use crate::refusal::{Refusal, is_grpc, status_trailers};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Instant;
use tessera_api::caller::CallerId;
use tessera_domain::callers::Caller;
use tessera_telemetry::audit::Denials;
use tessera_telemetry::metrics::Metrics;
use tessera_telemetry::trace;
use tonic::body::Body;
use tonic::{Code, Status};
use tonic_types::StatusExt as _;

/// Layer: observe every call (see the module).
#[derive(Debug, Clone)]
pub struct Observe(Arc<Sinks>);

/// Where observations go (one `Arc`, so a call clones one pointer).
#[derive(Debug)]
struct Sinks {
    metrics: Arc<Metrics>,
    denials: Arc<Denials>,
    trace: bool,
}

impl Observe {
    /// Records into `metrics` and `denials` (whose summariser writes the
    /// audit trail); opens server spans joined to the caller's trace
    /// context when `trace` (OTLP trace export is on).
    pub fn new(metrics: Arc<Metrics>, denials: Arc<Denials>, trace: bool) -> Self {
        Self(Arc::new(Sinks {
            metrics,
            denials,
            trace,
        }))
    }

    fn start<B>(&self, req: &http::Request<B>) -> Call {
        let mut call = Call {
            sinks: self.0.clone(),
            method: None,
            start: Instant::now(),
            span: None,
            caller: None,
        };
        if is_grpc(req) {
            let table = self.0.metrics.rpc();
            let method = table.method(req.uri().path());
            // Health and reflection are not traced (balancers call them
            // every few seconds); unknown paths neither, so span names stay
            // few.
            call.span = table
                .method_at(method)
                .filter(|m| self.0.trace && !m.service.starts_with("grpc."))
                .map(|m| trace::server_span(m, req.headers()));
            call.method = Some(method);
        }
        call
    }
}

impl<S> tower::Layer<S> for Observe {
    type Service = Observed<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Observed {
            inner,
            observe: self.clone(),
        }
    }
}

/// Service of [`Observe`].
#[derive(Debug, Clone)]
pub struct Observed<S> {
    inner: S,
    observe: Observe,
}

impl<S, B> tower::Service<http::Request<B>> for Observed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Observing<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let call = self.observe.start(&req);
        let inner = &mut self.inner;
        let future = match &call.span {
            Some(span) => span.in_scope(|| inner.call(req)),
            None => inner.call(req),
        };
        Observing {
            future,
            call: Some(call),
        }
    }
}

pin_project_lite::pin_project! {
    /// A call under observation, until its response headers.
    pub struct Observing<F> {
        #[pin]
        future: F,
        call: Option<Call>,
    }
}

impl<F, E> Future for Observing<F>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        // The handler runs in the call's span (so that its own calls carry
        // the trace context on).
        let span = me.call.as_ref().and_then(|c| c.span.clone());
        let entered = span.as_ref().map(tracing::Span::enter);
        let mut response = ready!(me.future.poll(cx))?;
        drop(entered);
        let Some(mut call) = me.call.take() else {
            return Poll::Ready(Ok(response));
        };
        if let Some(refusal) = response.extensions_mut().remove::<Refusal>() {
            record_refusal(&call.sinks, refusal);
        }
        call.caller = response.extensions().get::<CallerId>().map(|c| c.0.clone());
        if call.method.is_none() {
            return Poll::Ready(Ok(response));
        }
        if let Some(code) = grpc_code(response.headers()) {
            let (code, response) = explain_bad_input(code, response);
            call.finish(code, Some(response.headers()));
            return Poll::Ready(Ok(response));
        }
        Poll::Ready(Ok(
            response.map(|body| Body::new(ObservedBody { body, call }))
        ))
    }
}

/// A call whose status is still to come. Dropped before it is known (the
/// client went away), it is recorded as CANCELLED.
struct Call {
    sinks: Arc<Sinks>,
    /// The RPC's index in the latency table; `None`: not a gRPC call,
    /// not recorded.
    method: Option<usize>,
    start: Instant,
    span: Option<tracing::Span>,
    caller: Option<Arc<Caller>>,
}

impl Call {
    /// Records the call answered with `code` (once: `method` is taken).
    fn finish(&mut self, code: Code, status: Option<&http::HeaderMap>) {
        let Some(method) = self.method.take() else {
            return;
        };
        let took = self.start.elapsed();
        self.sinks.metrics.rpc().observe(method, code, took);
        // Parsed only for a span or the DEBUG log: a flood of refusals
        // costs no decoding.
        let wanted = self.span.is_some() || tracing::enabled!(tracing::Level::DEBUG);
        let status = status
            .filter(|_| code != Code::Ok && wanted)
            .and_then(Status::from_header_map);
        if let Some(span) = &self.span {
            let caller = self.caller.as_deref().map(|c| c.id.as_str());
            let info = status.as_ref().map(|s| s.get_error_details());
            let reason = info
                .as_ref()
                .and_then(|d| d.error_info())
                .map(|i| i.reason.as_str());
            trace::record_outcome(span, code, caller, reason);
        }
        if let Some(status) = &status {
            log_status(status);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled, None);
    }
}

/// What the edge's own refusals add to the record: the shed counter, or
/// a count in the audit trail's `caller_denied` summary (and a DEBUG line:
/// an INFO line per refusal would let anyone flood the log too).
fn record_refusal(sinks: &Sinks, refusal: Refusal) {
    match refusal {
        Refusal::Shed => sinks.metrics.shed(),
        Refusal::Denied(denial) => {
            tracing::debug!(
                rpc = denial.rpc.as_str(),
                reason = denial.reason,
                "caller refused"
            );
            sinks.denials.record(denial);
        }
    }
}

/// The status code in a header map (trailers-only response headers, or
/// trailers); a value that is no code is UNKNOWN.
fn grpc_code(headers: &http::HeaderMap) -> Option<Code> {
    let v = headers.get("grpc-status")?;
    let n = std::str::from_utf8(v.as_bytes()).ok()?.parse::<i32>().ok();
    Some(n.map_or(Code::Unknown, Code::from_i32))
}

/// A message over the decoding limit, said like every other bad input.
fn oversize_status() -> Status {
    tessera_api::invalid(
        "request",
        "the message is larger than this RPC accepts (see the README's limits)",
    )
}

/// tonic's own answers to bad input, said like every other bad input: its
/// bare `OUT_OF_RANGE` for a message over the decoding limit, and its
/// `INTERNAL` "failed to decode Protobuf message" for bytes that are no
/// request of this RPC (invalid UTF-8 in a string, a wrong wire type).
/// Tessera's own `INTERNAL` always carries an `ErrorInfo`, so a bare one
/// with that message can only be tonic's codec.
fn tonic_bad_input(code: Code, headers: &http::HeaderMap) -> Option<Status> {
    let undecodable = code == Code::Internal
        && !headers.contains_key("grpc-status-details-bin")
        && headers
            .get("grpc-message")
            // As sent: percent-encoded (gRPC's `grpc-message`), or not.
            .is_some_and(|m| {
                let m = m.as_bytes();
                m.starts_with(b"failed to decode") || m.starts_with(b"failed%20to%20decode")
            });
    match code {
        Code::OutOfRange => Some(oversize_status()),
        _ if undecodable => Some(tessera_api::invalid(
            "request",
            "the message is not a valid encoding of this RPC's request",
        )),
        _ => None,
    }
}

/// A trailers-only answer of [`tonic_bad_input`], replaced.
fn explain_bad_input(code: Code, response: http::Response<Body>) -> (Code, http::Response<Body>) {
    match tonic_bad_input(code, response.headers()) {
        Some(status) => (status.code(), status.into_http()),
        None => (code, response),
    }
}

/// Every error status sent, at DEBUG with its message and details: what an
/// operator needs to see why calls fail, and what the test suite's log
/// scan searches for leaked secrets (no status may carry one). The
/// details are protobuf bytes: escaped (`?`), so the line stays one line of
/// text and a secret in them would still show as itself.
fn log_status(status: &Status) {
    tracing::debug!(
        code = ?status.code(),
        message = status.message(),
        details = ?String::from_utf8_lossy(status.details()),
        "call answered with an error"
    );
}

/// A response body that records its call when the status goes out.
struct ObservedBody {
    body: Body,
    call: Call,
}

impl http_body::Body for ObservedBody {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let me = self.get_mut();
        let polled = ready!(Pin::new(&mut me.body).poll_frame(cx));
        Poll::Ready(match polled {
            Some(Ok(frame)) => Some(Ok(match frame.into_trailers() {
                Ok(trailers) => http_body::Frame::trailers(me.trailers(trailers)),
                Err(frame) => frame,
            })),
            Some(Err(status)) => {
                me.call.finish(status.code(), None);
                Some(Err(status))
            }
            None => {
                me.call.finish(Code::Unknown, None);
                None
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl ObservedBody {
    /// The call's trailers, recorded (and explained when oversize).
    fn trailers(&mut self, trailers: http::HeaderMap) -> http::HeaderMap {
        let code = grpc_code(&trailers).unwrap_or(Code::Unknown);
        let (code, trailers) = match tonic_bad_input(code, &trailers) {
            Some(status) => (status.code(), status_trailers(&status)),
            None => (code, trailers),
        };
        self.call.finish(code, Some(&trailers));
        trailers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_read_from_headers_or_trailers() {
        let mut h = http::HeaderMap::new();
        assert_eq!(grpc_code(&h), None);
        h.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(grpc_code(&h), Some(Code::Unauthenticated));
        h.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(grpc_code(&h), Some(Code::Unknown));
    }

    #[test]
    fn only_out_of_range_is_explained_as_oversize() {
        let ok = http::Response::new(Body::empty());
        assert_eq!(explain_bad_input(Code::Ok, ok).0, Code::Ok);
        let (code, response) =
            explain_bad_input(Code::OutOfRange, http::Response::new(Body::empty()));
        assert_eq!(code, Code::InvalidArgument);
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("`request`"),
            "{}",
            status.message()
        );
    }
}
