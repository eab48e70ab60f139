//! A call the edge answers itself (shed, or refused for who is calling):
//! the answer in the request's own protocol, and the [`Refusal`] it carries
//! to the observing layer, which records it with the rest of the call.

use tessera_proto::v1::ErrorReason;
use tonic::body::Body;
use tonic::{Code, Status};

/// Why the edge refused a call, in the refusal's response extensions.
#[derive(Debug, Clone)]
pub enum Refusal {
    /// Too many calls in flight (counted as shed).
    Shed,
    /// Refused for who is calling (written to the audit trail as
    /// `caller_denied`).
    Denied {
        /// The caller, when it was known but lacked the right.
        caller: Option<String>,
        /// The RPC's method name, or the path when it is no RPC.
        rpc: String,
        /// The `ErrorReason` sent.
        reason: ErrorReason,
        /// What was missing or presented (never a credential).
        detail: String,
    },
}

impl Refusal {
    /// A refusal for who is calling.
    pub fn denied(caller: Option<&str>, rpc: &str, reason: ErrorReason, detail: &str) -> Self {
        Self::Denied {
            caller: caller.map(str::to_owned),
            rpc: rpc.to_owned(),
            reason,
            detail: detail.to_owned(),
        }
    }
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
