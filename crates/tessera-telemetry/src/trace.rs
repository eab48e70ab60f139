//! W3C trace context (`traceparent`, `tracestate`) across Tessera's own
//! calls, so that one trace shows a request end to end: a refresh-token
//! reuse caught by the issuer, and the `Revoke{family_id}` it sends the
//! revocation service; a `Revoke{kid}` on a verifier and the issuer's
//! `CompromiseKey`.
//!
//! Only the OpenTelemetry API is used here. The propagator and the tracer
//! are installed by the binary when OTLP export is on; without them (the
//! default, and every library test) [`inject`] writes nothing and the
//! edge's observing layer opens no span. The span of a call is opened and
//! closed by that layer (`tessera_edge::observe`), from its one observation
//! of the call.

use crate::metrics::rpc::Method;
use opentelemetry::propagation::{Extractor, Injector};
use tonic::Code;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

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

/// The server span of a call to `method`, child of the context `headers`
/// carry.
pub fn server_span(method: &Method, headers: &http::HeaderMap) -> tracing::Span {
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
        enduser.id = tracing::field::Empty,
        rpc.grpc.error_reason = tracing::field::Empty,
    );
    // Fails only when no OpenTelemetry layer is installed: then there is
    // no trace to join.
    let _ = span.set_parent(parent);
    span
}

/// Records the call's outcome on its span: the authenticated caller, if
/// any, the status and its `ErrorInfo` reason. The server's own failures
/// are errors (OpenTelemetry's gRPC conventions); a refusal of the
/// caller's request is not.
pub fn record_outcome(
    span: &tracing::Span,
    code: Code,
    caller: Option<&str>,
    reason: Option<&str>,
) {
    if let Some(caller) = caller {
        span.record("enduser.id", caller);
    }
    if let Some(reason) = reason {
        span.record("rpc.grpc.error_reason", reason);
    }
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
