//! The caller of a request, as the edge authenticated it (a bearer service
//! key or a verified client certificate, checked against the callers
//! file), and the refusal a service gives a caller that lacks a finer right
//! (an audience, an extra claim, a revocation target).

use crate::status;
use std::sync::Arc;
use tessera_domain::callers::Caller;
use tessera_proto::v1::ErrorReason;
use tessera_telemetry::audit;
use tonic::{Code, Status};

/// The authenticated caller of a request, in its extensions (put there by
/// the edge's gate). Absent when no callers file is configured (every
/// caller is admitted) or the RPC is open.
#[derive(Debug, Clone)]
pub struct CallerId(pub Arc<Caller>);

/// The caller of `request`, if one was authenticated.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Arc<Caller>> {
    request.extensions().get::<CallerId>().map(|c| &c.0)
}

/// The metadata in which one Tessera service names the caller it acts for
/// (a verifier forwarding `Revoke{kid}`, an issuer ending a subject's
/// sessions on a password reset).
pub const ON_BEHALF_OF: &str = "x-tessera-on-behalf-of";

/// The metadata by which an issuer's `Revoke{kid}` says it fans out a kill
/// it has just made (its `CompromiseKey`): the revocation service records
/// that kill though the key was compromised before it asked. Honoured from
/// a `relay` caller (a Tessera service) or with no callers file; it grants
/// nothing, it only tells a first record from a retry.
pub const KILL_FAN_OUT: &str = "x-tessera-kill-fan-out";

/// True for what a caller id may be (the callers file's rule: 1 to 64
/// printable ASCII characters).
pub fn is_caller_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_graphic())
}

/// The audit name of `request`'s caller: its id, or [`audit::UNKNOWN`].
/// When an authenticated caller relays a request for another
/// ([`ON_BEHALF_OF`]), both: `"<that caller> via <this caller>"`. The
/// relayed name is recorded as the relaying caller reports it, and always
/// beside that caller's own authenticated id, so no caller can hide
/// behind another.
pub fn caller_of<T>(request: &tonic::Request<T>) -> String {
    let Some(c) = caller(request) else {
        return audit::UNKNOWN.to_owned();
    };
    let relayed = request
        .metadata()
        .get(ON_BEHALF_OF)
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_caller_name(v));
    match relayed {
        Some(who) => format!("{who} via {}", c.id),
        None => c.id.clone(),
    }
}

/// `PERMISSION_DENIED` / `ERROR_REASON_CALLER_NOT_ALLOWED`, naming the
/// right; the denial is written to the audit trail (`caller_denied`).
pub fn not_allowed(caller: &Caller, rpc: &str, what: &str) -> Status {
    let reason = ErrorReason::CallerNotAllowed;
    audit::caller_denied(Some(&caller.id), rpc, reason.as_str_name(), what);
    not_allowed_status(caller, what)
}

/// The status of [`not_allowed`] alone, for a refusal whose audit record is
/// written by whoever observes the call (the edge's gate).
pub fn not_allowed_status(caller: &Caller, what: &str) -> Status {
    status(
        Code::PermissionDenied,
        ErrorReason::CallerNotAllowed,
        format!("caller {} may not {what}", caller.id),
    )
}
