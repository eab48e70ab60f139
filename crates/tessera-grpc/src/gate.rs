//! The edge layers every request meets before a service sees it (see the
//! stack in the `tessera` crate's `app.rs`):
//!
//! - [`Shed`] (in `shed.rs`): a global bound on calls in flight. Past it a
//!   call is refused at once with `RESOURCE_EXHAUSTED` /
//!   `ERROR_REASON_OVERLOADED` rather than queued without bound; health is
//!   never shed, so a balancer still sees an overloaded instance alive. It
//!   also gives tonic's bare "message too large" status an ErrorInfo and
//!   the field.
//! - [`Authenticate`]: who is calling (a bearer service key, or a verified
//!   mTLS client certificate), whether the callers file lets them call this
//!   RPC at all, and their rate. The finer rights (audiences, extra claims,
//!   revocation targets) are checked by the services with [`caller`].

use crate::net::ConnInfo;
use crate::status;
use arc_swap::ArcSwapOption;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tessera_domain::callers::{Access, Caller, Callers};
use tessera_proto::v1::ErrorReason;
use tonic::body::Body;
use tonic::{Code, Status};

mod shed;
pub use shed::{Shed, Shedding};

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// The authenticated caller of a request, in its extensions. Absent when no
/// callers file is configured (every caller is admitted) or the RPC is open.
#[derive(Debug, Clone)]
pub struct CallerId(pub Arc<Caller>);

/// The caller of `request`, if one was authenticated.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Arc<Caller>> {
    request.extensions().get::<CallerId>().map(|c| &c.0)
}

/// `PERMISSION_DENIED` / `ERROR_REASON_CALLER_NOT_ALLOWED`, naming the
/// right; the denial is written to the audit trail (`caller_denied`).
pub fn not_allowed(caller: &Caller, rpc: &str, what: &str) -> Status {
    let reason = ErrorReason::CallerNotAllowed;
    crate::audit::caller_denied(Some(&caller.id), rpc, reason.as_str_name(), what);
    status(
        Code::PermissionDenied,
        reason,
        format!("caller {} may not {what}", caller.id),
    )
}

/// What a request path is, for access decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class<'a> {
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

fn classify(path: &str) -> Class<'_> {
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

/// True for a gRPC request (a gRPC content type).
pub(crate) fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A refusal in the request's own protocol: a gRPC status, or for plain
/// HTTP the matching status code.
fn refuse<B>(req: &http::Request<B>, status: Status) -> http::Response<Body> {
    if is_grpc(req) {
        return status.into_http();
    }
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
    fn admit<B>(&self, req: &http::Request<B>) -> Result<Option<Arc<Caller>>, Status> {
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
            let rpc = rpc.unwrap_or(req.uri().path());
            crate::audit::caller_denied(None, rpc, reason.as_str_name(), credential(req));
            status(
                Code::Unauthenticated,
                reason,
                "no known caller: present a service key (authorization: Bearer …) or a client certificate named in the callers file",
            )
        })?;
        // Verify and the JWKS, when not open, need any known caller; every
        // other RPC must be granted by name.
        let granted = match rpc {
            Some("Verify" | "GetJwks" | "WatchKeys") | None => true,
            Some(m) => caller.may_call(m),
        };
        if !granted {
            let rpc = rpc.unwrap_or("?");
            return Err(not_allowed(caller, rpc, &format!("call {rpc}")));
        }
        if let Some(limiter) = registry.limiters.get(&caller.id)
            && limiter.check().is_err()
        {
            return Err(overloaded(&format!(
                "caller {} is over its rate limit; retry later",
                caller.id
            )));
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

fn overloaded(message: &str) -> Status {
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
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.registry.admit(&req) {
            Ok(caller) => {
                if let Some(c) = caller {
                    req.extensions_mut().insert(CallerId(c));
                }
                Box::pin(self.inner.call(req))
            }
            Err(status) => {
                tracing::info!(
                    path = req.uri().path(),
                    code = ?status.code(),
                    "caller refused"
                );
                let response = refuse(&req, status);
                Box::pin(async move { Ok(response) })
            }
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
    }
}
