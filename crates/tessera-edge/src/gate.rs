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
use arc_swap::ArcSwapOption;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::task::{Context, Poll};
use tessera_api::caller::{CallerId, not_allowed_status};
use tessera_api::status;
use tessera_domain::callers::{Access, Caller, Callers};
use tessera_proto::v1::ErrorReason;
use tonic::body::Body;
use tonic::{Code, Status};

mod shed;
pub use shed::Shed;

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
    /// Anything else (the router answers it, usually 404).
    Other,
}

pub(crate) fn classify(path: &str) -> Class<'_> {
    if let Some(rest) = path.strip_prefix("/tessera.v1.") {
        return rest
            .split_once('/')
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
    Class::Other
}

/// The callers in force and their rate limiters. `None`: no callers file,
/// every caller admitted (loopback only, see the README).
#[derive(Default)]
pub struct CallerRegistry {
    current: ArcSwapOption<Registry>,
}

struct Registry {
    callers: Callers,
    limiters: HashMap<String, DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for CallerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.current.load().as_ref().map(|r| r.callers.len());
        f.debug_struct("CallerRegistry")
            .field("callers", &n)
            .finish()
    }
}

impl CallerRegistry {
    /// Puts `callers` in force (a reload starts every rate afresh).
    pub fn replace(&self, callers: Callers) {
        let limiters = callers
            .iter()
            .filter_map(|c| {
                let rate = c.rate?;
                let per_second = NonZeroU32::new(rate.per_second)?;
                let burst = NonZeroU32::new(rate.burst)?;
                let quota = Quota::per_second(per_second).allow_burst(burst);
                Some((c.id.clone(), RateLimiter::direct(quota)))
            })
            .collect();
        self.current
            .store(Some(Arc::new(Registry { callers, limiters })));
    }

    /// True once a callers file is in force.
    pub fn enforced(&self) -> bool {
        self.current.load().is_some()
    }

    /// Who `req` comes from and whether it may be served.
    fn admit<B>(
        &self,
        req: &http::Request<B>,
    ) -> Result<Option<Arc<Caller>>, (Status, Option<Refusal>)> {
        let guard = self.current.load();
        let Some(registry) = guard.as_ref() else {
            return Ok(None);
        };
        let access = registry.callers.access;
        let (open, rpc) = match classify(req.uri().path()) {
            Class::Other => return Ok(None),
            Class::Health => (access.health == Access::Open, None),
            Class::HttpJwks => (access.jwks == Access::Open, None),
            Class::Rpc(m @ ("GetJwks" | "WatchKeys")) => (access.jwks == Access::Open, Some(m)),
            Class::Rpc(m @ "Verify") => (access.verify == Access::Open, Some(m)),
            Class::Rpc(m) => (false, Some(m)),
        };
        if open {
            return Ok(None);
        }
        let caller = identify(&registry.callers, req).ok_or_else(|| {
            let reason = ErrorReason::CallerUnknown;
            let refusal = Refusal::denied(None, rpc.unwrap_or(req.uri().path()), reason, credential(req));
            let status = status(
                Code::Unauthenticated,
                reason,
                "no known caller: present a service key (authorization: Bearer …) or a client certificate named in the callers file",
            );
            (status, Some(refusal))
        })?;
        // Verify and the JWKS, when not open, need any known caller; every
        // other RPC must be granted by name.
        let granted = match rpc {
            Some("Verify" | "GetJwks" | "WatchKeys") | None => true,
            Some(m) => caller.may_call(m),
        };
        if !granted {
            let rpc = rpc.unwrap_or("?");
            let what = format!("call {rpc}");
            let reason = ErrorReason::CallerNotAllowed;
            let refusal = Refusal::denied(Some(&caller.id), rpc, reason, &what);
            return Err((not_allowed_status(caller, &what), Some(refusal)));
        }
        if let Some(limiter) = registry.limiters.get(&caller.id)
            && limiter.check().is_err()
        {
            let message = format!("caller {} is over its rate limit; retry later", caller.id);
            return Err((overloaded(&message), None));
        }
        Ok(Some(caller.clone()))
    }
}

/// What an unknown caller presented, for the audit trail (never the
/// credential itself).
fn credential<B>(req: &http::Request<B>) -> &'static str {
    if req.headers().contains_key(http::header::AUTHORIZATION) {
        "a credential in `authorization` that matches no caller"
    } else if req
        .extensions()
        .get::<ConnInfo>()
        .is_some_and(|c| c.tls_names.is_some())
    {
        "a client certificate named by no caller"
    } else {
        "no credential"
    }
}

/// The caller presenting a bearer key, else a verified client certificate.
fn identify<'r, B>(callers: &'r Callers, req: &http::Request<B>) -> Option<&'r Arc<Caller>> {
    let bearer = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if let Some(key) = bearer {
        // A key that matches no caller is refused even if a certificate
        // would match: a wrong credential is never silently upgraded.
        return callers.by_key(key.trim());
    }
    let names = req.extensions().get::<ConnInfo>()?.tls_names.as_ref()?;
    callers.by_tls_name(names.iter().map(String::as_str))
}

pub(crate) fn overloaded(message: &str) -> Status {
    status(Code::ResourceExhausted, ErrorReason::Overloaded, message)
}

/// Layer: authenticate callers (see the module).
#[derive(Debug, Clone)]
pub struct Authenticate {
    registry: Arc<CallerRegistry>,
}

impl Authenticate {
    /// Authenticates against `registry` (which may be reloaded any time).
    pub fn new(registry: Arc<CallerRegistry>) -> Self {
        Self { registry }
    }
}

impl<S> tower::Layer<S> for Authenticate {
    type Service = Authenticated<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            registry: self.registry.clone(),
        }
    }
}

/// Service of [`Authenticate`].
#[derive(Debug, Clone)]
pub struct Authenticated<S> {
    inner: S,
    registry: Arc<CallerRegistry>,
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
        match self.registry.admit(&req) {
            Ok(caller) => {
                if let Some(c) = &caller {
                    req.extensions_mut().insert(CallerId(c.clone()));
                }
                Guarded::admitted(self.inner.call(req), Admitted(caller))
            }
            Err((status, refusal)) => Guarded::refused(refuse(&req, status, refusal)),
        }
    }
}

/// An admitted call's caller, handed to its response (in the extensions)
/// so that the observing layer names who called.
#[derive(Debug)]
pub struct Admitted(Option<Arc<Caller>>);

impl Guard for Admitted {
    fn answered(&mut self, mut response: http::Response<Body>) -> http::Response<Body> {
        if let Some(c) = self.0.take() {
            response.extensions_mut().insert(CallerId(c));
        }
        response
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
    }
}
