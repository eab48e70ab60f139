//! A call the edge answers itself (shed, or refused for who is calling):
//! the answer in the request's own protocol, and the [`Refusal`] it carries
//! to the observing layer, which records it with the rest of the call.

use std::net::IpAddr;
use tessera_proto::v1::ErrorReason;
use tessera_telemetry::audit::Denial;
use tonic::body::Body;
use tonic::{Code, Status};

/// Why the edge refused a call, in the refusal's response extensions.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Too many calls in flight (counted as shed).
    Shed,
    /// Refused for who is calling (summarised in the audit trail as
    /// `caller_denied`).
    Denied(Denial),
}

impl Refusal {
    /// A refusal for who is calling: `rpc` is a bounded name (see the
    /// gate), `detail` what was missing or presented, never a credential.
    pub fn denied(
        peer: Option<IpAddr>,
        caller: Option<&str>,
        rpc: &str,
        reason: ErrorReason,
        detail: &str,
    ) -> Self {
        Self::Denied(Denial {
            peer,
            caller: caller.map(str::to_owned),
            rpc: rpc.to_owned(),
            reason: reason.as_str_name(),
            detail: detail.to_owned(),
        })
    }
}

/// The HTTP forward-auth endpoint, and any path below it (Envoy's HTTP
/// `ext_authz` appends the original path).
pub const FORWARD_AUTH_PATH: &str = "/gateway/auth";

/// True for the forward-auth endpoint or a path below it.
pub(crate) fn is_forward_auth(path: &str) -> bool {
    path.strip_prefix(FORWARD_AUTH_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// True for a gRPC request (a gRPC content type).
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// `status` in the request's own protocol (a gRPC status, or for plain
/// HTTP the matching status code), carrying `refusal` for the observer.
pub(crate) fn refuse<B>(
    req: &http::Request<B>,
    status: Status,
    refusal: Option<Refusal>,
) -> http::Response<Body> {
    let mut response = if is_grpc(req) {
        status.into_http()
    } else if is_forward_auth(req.uri().path()) {
        gateway_refusal(&status)
    } else {
        http_refusal(&status)
    };
    if let Some(r) = refusal {
        response.extensions_mut().insert(r);
    }
    response
}

fn http_refusal(status: &Status) -> http::Response<Body> {
    let code = match status.code() {
        Code::Unauthenticated => http::StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => http::StatusCode::FORBIDDEN,
        Code::ResourceExhausted => http::StatusCode::TOO_MANY_REQUESTS,
        _ => http::StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = http::Response::new(Body::new(http_body_util::Full::new(
        bytes::Bytes::from(status.message().to_owned()),
    )));
    *response.status_mut() = code;
    response
}

/// A refusal of the gateway itself on the forward-auth endpoint. Gateways
/// hand a 401 or 403 (and, Caddy, its body) to their client, who would
/// read it as a verdict on their token and learn Tessera's caller ids:
/// a gateway not admitted is a fault of the deployment, answered `500`
/// with no body (`503` when shed: the gateway fails closed either way).
/// Why is in Tessera's audit trail (`caller_denied`) and log.
fn gateway_refusal(status: &Status) -> http::Response<Body> {
    let mut response = http::Response::new(Body::empty());
    *response.status_mut() = match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => http::StatusCode::INTERNAL_SERVER_ERROR,
        _ => http::StatusCode::SERVICE_UNAVAILABLE,
    };
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    response
}

/// `status` as the trailers that end a response already under way.
pub(crate) fn status_trailers(status: &Status) -> http::HeaderMap {
    let mut headers = status.clone().into_http::<Body>().into_parts().0.headers;
    headers.remove(http::header::CONTENT_TYPE);
    headers
}
