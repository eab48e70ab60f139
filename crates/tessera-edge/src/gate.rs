//! The edge layers every request meets before a service sees it (see the
//! stack in the `tessera` crate's `app.rs`):
//!
//! - [`Shed`] (in `shed.rs`): a global bound on calls in flight. Past it a
//!   call is refused at once with `RESOURCE_EXHAUSTED` /
//!   `ERROR_REASON_OVERLOADED` rather than queued without bound; health is
//!   never shed, so a balancer still sees an overloaded instance alive.
//! - [`Authenticate`]: who is calling (a bearer service key, or a verified
//!   mTLS client certificate), whether the callers file lets them call this
//!   RPC at all, and their rate. The finer rights (audiences, extra claims,
//!   revocation targets) are checked by the services with
//!   `tessera_api::caller`.
//!
//! Neither writes a log line, an audit record or a metric: each refusal
//! carries a [`Refusal`] in its response, which the observing layer
//! (`crate::observe`) records with the rest of the call.

use crate::guard::{Guard, Guarded};
use crate::net::ConnInfo;
use crate::refusal::{Refusal, refuse};
pub use crate::registry::CallerRegistry;
use crate::streams::{Credential, STREAMS, StreamBound};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tessera_api::caller::{CallerId, ON_BEHALF_OF, not_allowed_status};
use tessera_api::status;
use tessera_domain::callers::{Access, Caller, Callers, RPCS};
use tessera_proto::v1::ErrorReason;
use tonic::body::Body;
use tonic::{Code, Status};

mod shed;
pub use shed::{Shed, ShedLimits};

/// What a request path is, for access decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class<'a> {
    /// A Tessera RPC, by method name.
    Rpc(&'a str),
    /// gRPC health and reflection, the metrics page, and the HTTP probes
    /// (`/livez`, `/readyz`): never shed, open unless the callers file
    /// closes health.
    Health,
    /// The HTTP JWKS and discovery documents.
    HttpJwks,
    /// A gateway asking about its client's token: the HTTP forward-auth
    /// endpoint (`http`: its own key is in [`GATEWAY_KEY`]) or Envoy's `Check`.
    Gateway { http: bool },
    /// Anything else (the router answers it, usually 404).
    Other,
}

pub use crate::refusal::FORWARD_AUTH_PATH;

/// Envoy's gRPC `ext_authz` method.
pub const EXT_AUTHZ_PATH: &str = "/envoy.service.auth.v3.Authorization/Check";

/// Where a gateway presents its own key on the HTTP forward-auth endpoint.
pub const GATEWAY_KEY: &str = "x-tessera-gateway-key";

pub(crate) fn classify(path: &str) -> Class<'_> {
    if let Some(rest) = path.strip_prefix("/tessera.v1.") {
        // Only the contract's methods: a made-up name is no RPC to refuse
        // (the router answers UNIMPLEMENTED), so its text never reaches
        // the audit trail and varying it cannot flood the summaries.
        return rest
            .split_once('/')
            .filter(|(_, m)| RPCS.contains(m))
            .map_or(Class::Other, |(_, m)| Class::Rpc(m));
    }
    if path.starts_with("/grpc.health.v1.")
        || path.starts_with("/grpc.reflection.")
        || path == "/metrics"
        || path == "/livez"
        || path == "/readyz"
    {
        return Class::Health;
    }
    if path.starts_with("/.well-known/") {
        return Class::HttpJwks;
    }
    if crate::refusal::is_forward_auth(path) {
        return Class::Gateway { http: true };
    }
    if path == EXT_AUTHZ_PATH {
        return Class::Gateway { http: false };
    }
    Class::Other
}

impl CallerRegistry {
    /// Who `req` comes from and whether it may be served.
    fn admit<B>(&self, req: &http::Request<B>) -> Result<Admission, (Status, Option<Refusal>)> {
        let guard = self.load();
        let Some(registry) = guard.as_ref() else {
            return Ok(Admission::Unchecked);
        };
        let access = registry.callers.access;
        let class = classify(req.uri().path());
        let (open, rpc) = match class {
            Class::Other => (true, None),
            Class::Health => (access.health == Access::Open, None),
            Class::HttpJwks => (access.jwks == Access::Open, None),
            Class::Gateway { .. } => (false, None),
            Class::Rpc(m @ ("GetJwks" | "WatchKeys")) => (access.jwks == Access::Open, Some(m)),
            Class::Rpc(m @ "Verify") => (access.verify == Access::Open, Some(m)),
            Class::Rpc(m) => (false, Some(m)),
        };
        if open {
            return Ok(Admission::Open);
        }
        let caller = identify(&registry.callers, req, class).map_err(|detail| {
            let reason = ErrorReason::CallerUnknown;
            let refusal = Refusal::denied(peer(req), None, audit_name(class), reason, detail);
            let status = status(
                Code::Unauthenticated,
                reason,
                format!("no known caller ({detail}): present a service key (authorization: Bearer …) or a client certificate named in the callers file"),
            );
            (status, Some(refusal))
        })?;
        let what = lacking(caller, rpc, class, req);
        if let Some(what) = what {
            let reason = ErrorReason::CallerNotAllowed;
            let name = audit_name(class);
            let refusal = Refusal::denied(peer(req), Some(&caller.id), name, reason, &what);
            return Err((not_allowed_status(caller, &what), Some(refusal)));
        }
        if let Some(limiter) = registry.limiters.get(&caller.id)
            && limiter.check().is_err()
        {
            let message = format!("caller {} is over its rate limit; retry later", caller.id);
            return Err((overloaded(&message), None));
        }
        Ok(Admission::Caller(caller.clone()))
    }
}

/// What a known caller lacks for `req` at the edge, if anything.
fn lacking<B>(
    caller: &Caller,
    rpc: Option<&str>,
    class: Class<'_>,
    req: &http::Request<B>,
) -> Option<String> {
    if matches!(class, Class::Gateway { .. }) && !caller.may_gate() {
        return Some("answer a gateway (gateway = true)".to_owned());
    }
    // The JWKS, when not open, needs any known caller (it is public key
    // material: closing it only hides it from strangers); every other RPC,
    // Verify included, must be granted by name.
    if let Some(m) = rpc.filter(|m| !matches!(*m, "GetJwks" | "WatchKeys"))
        && !caller.may_call(m)
    {
        return Some(format!("call {m}"));
    }
    // Acting for another caller is a right of Tessera's own services: a
    // name relayed by anyone else is refused, not written beside its own
    // in the audit trail.
    if req.headers().contains_key(ON_BEHALF_OF) && !caller.may_relay() {
        return Some("act for another caller (relay)".to_owned());
    }
    None
}

/// Who a call was admitted as.
enum Admission {
    /// No callers file: everyone is admitted (loopback only).
    Unchecked,
    /// An open endpoint (or a path no service serves), without looking at
    /// credentials: shed within the open budget and the per-peer bound.
    Open,
    /// A known caller, granted this RPC.
    Caller(Arc<Caller>),
}

/// In a request's extensions: admitted anonymously to an open endpoint
/// (see [`crate::gate::Shed`]'s open budget).
#[derive(Debug, Clone, Copy)]
pub struct OpenCall;

/// What a request presents as its credential.
enum Presented<'a> {
    /// `authorization: Bearer <key>` (the scheme in any case, RFC 7235).
    Key(&'a str),
    /// An `authorization` header that is no single bearer key: refused,
    /// never ignored in favour of a certificate.
    Malformed,
    /// The verified client certificate's names (mTLS).
    Certificate(&'a [String]),
    /// Nothing.
    Nothing,
}

/// The credential `req` presents. On the HTTP forward-auth endpoint the
/// gateway's key is in [`GATEWAY_KEY`] and `authorization` is its client's
/// token, never a credential; elsewhere [`GATEWAY_KEY`] means nothing.
fn presented<'a, B>(req: &'a http::Request<B>, class: Class<'_>) -> Presented<'a> {
    let header = match class {
        Class::Gateway { http: true } => GATEWAY_KEY,
        _ => http::header::AUTHORIZATION.as_str(),
    };
    let mut headers = req.headers().get_all(header).iter();
    if let Some(first) = headers.next() {
        if headers.next().is_some() {
            return Presented::Malformed;
        }
        let value = first.to_str().ok();
        let key = if header == GATEWAY_KEY {
            value.map(str::trim)
        } else {
            value
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, key)| key.trim())
        }
        .filter(|key| !key.is_empty() && !key.contains(' '));
        return key.map_or(Presented::Malformed, Presented::Key);
    }
    match req
        .extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.tls_names.as_deref())
    {
        Some(names) => Presented::Certificate(names),
        None => Presented::Nothing,
    }
}

/// The caller presenting a bearer key, else a verified client certificate;
/// otherwise what was presented, for the audit trail (never the credential
/// itself). A key that matches no caller is refused even if a certificate
/// would match: a wrong credential is never silently upgraded.
fn identify<'r, B>(
    callers: &'r Callers,
    req: &http::Request<B>,
    class: Class<'_>,
) -> Result<&'r Arc<Caller>, &'static str> {
    match presented(req, class) {
        Presented::Key(key) => callers
            .by_key(key)
            .ok_or("a credential in `authorization` that matches no caller"),
        Presented::Malformed => {
            Err("a malformed `authorization` header (one `Bearer <service key>` is the only form)")
        }
        Presented::Certificate(names) => callers
            .by_tls_name(names.iter().map(String::as_str))
            .ok_or("a client certificate named by no caller"),
        Presented::Nothing => Err("no credential"),
    }
}

/// How a refused call is named in the audit trail: a contract RPC by its
/// method name (bounded: at most 64 ASCII letters and digits, else
/// `other`), anything else by its class, never by the path a client made
/// up.
fn audit_name(class: Class<'_>) -> &str {
    match class {
        Class::Rpc(m) => m,
        Class::Other => "other",
        Class::Health => "health",
        Class::HttpJwks => "jwks",
        Class::Gateway { .. } => "gateway",
    }
}

/// The peer's address, for the audit trail.
fn peer<B>(req: &http::Request<B>) -> Option<std::net::IpAddr> {
    req.extensions()
        .get::<ConnInfo>()
        .and_then(|c| c.remote)
        .map(|a| a.ip())
}

pub(crate) fn overloaded(message: &str) -> Status {
    status(Code::ResourceExhausted, ErrorReason::Overloaded, message)
}

/// Layer: authenticate callers (see the module), and bound their streams
/// (`crate::streams`).
#[derive(Debug, Clone)]
pub struct Authenticate {
    registry: Arc<CallerRegistry>,
    stream_lifetime: Duration,
}

impl Authenticate {
    /// Authenticates against `registry` (which may be reloaded any time);
    /// streams end after `stream_lifetime` at the latest.
    pub fn new(registry: Arc<CallerRegistry>, stream_lifetime: Duration) -> Self {
        Self {
            registry,
            stream_lifetime,
        }
    }
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = Authenticated<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            layer: self.clone(),
        }
    }
}

/// Service of [`Authenticate`].
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    layer: Authenticate,
}

impl Authenticate {
    /// The bound of `req`'s stream, when it calls a streaming RPC.
    fn stream<B>(
        &self,
        req: &http::Request<B>,
        caller: Option<&Arc<Caller>>,
    ) -> Option<StreamBound> {
        let Class::Rpc(method) = classify(req.uri().path()) else {
            return None;
        };
        let rpc = STREAMS.into_iter().find(|s| *s == method)?;
        let credential = match presented(req, Class::Rpc(method)) {
            Presented::Key(k) => Some(Credential::Key(k.to_owned())),
            Presented::Certificate(names) => Some(Credential::Names(names.into())),
            Presented::Malformed | Presented::Nothing => None,
        };
        Some(StreamBound {
            registry: self.registry.clone(),
            rpc,
            caller: caller.zip(credential).map(|(c, cred)| (c.id.clone(), cred)),
            lifetime: self.stream_lifetime,
        })
    }
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Guarded<S::Future, Admitted>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.layer.registry.admit(&req) {
            Ok(admission) => {
                let caller = match admission {
                    Admission::Caller(c) => Some(c),
                    Admission::Open => {
                        req.extensions_mut().insert(OpenCall);
                        None
                    }
                    Admission::Unchecked => None,
                };
                if let Some(c) = &caller {
                    req.extensions_mut().insert(CallerId(c.clone()));
                }
                let stream = self.layer.stream(&req, caller.as_ref());
                Guarded::admitted(self.inner.call(req), Admitted { caller, stream })
            }
            Err((status, refusal)) => Guarded::refused(refuse(&req, status, refusal)),
        }
    }
}

/// An admitted call's caller, handed to its response (in the extensions)
/// so that the observing layer names who called; and a stream's bound.
pub struct Admitted {
    caller: Option<Arc<Caller>>,
    stream: Option<StreamBound>,
}

impl Guard for Admitted {
    fn answered(&mut self, mut response: http::Response<Body>) -> http::Response<Body> {
        if let Some(c) = self.caller.take() {
            response.extensions_mut().insert(CallerId(c));
        }
        match self.stream.take() {
            Some(bound) => response.map(|body| bound.bound(body)),
            None => response,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_classified() {
        assert_eq!(
            classify("/tessera.v1.IssuerService/Issue"),
            Class::Rpc("Issue")
        );
        assert_eq!(classify("/grpc.health.v1.Health/Check"), Class::Health);
        assert_eq!(classify("/livez"), Class::Health);
        assert_eq!(classify("/readyz"), Class::Health);
        assert_eq!(classify("/.well-known/jwks.json"), Class::HttpJwks);
        assert_eq!(classify("/anything"), Class::Other);
        assert_eq!(classify("/tessera.v1.X"), Class::Other);
        assert_eq!(classify("/tessera.v1.IssuerService/Flood1"), Class::Other);
        assert_eq!(classify("/gateway/auth"), Class::Gateway { http: true });
        assert_eq!(classify("/gateway/auth/x/y"), Class::Gateway { http: true });
        assert_eq!(classify("/gateway/authx"), Class::Other);
        assert_eq!(
            classify("/envoy.service.auth.v3.Authorization/Check"),
            Class::Gateway { http: false }
        );
    }
}
