//! Gateways asking about their clients' tokens: the answer to one request
//! through nginx `auth_request`, Caddy `forward_auth`, Traefik `ForwardAuth`
//! (HTTP, served by the binary) or Envoy `ext_authz` (gRPC, [`ExtAuthz`]),
//! from the same local view Verify reads: no store or network hop per
//! request, and every revocation this instance has learnt applies.
//!
//! The route decides the audience (and scopes); a request matching none is
//! refused. Answers follow RFC 6750 §3: no token is `401` with a bare
//! `Bearer` challenge; a token that fails verification for any reason
//! (malformed, wrong signature, expired, revoked, another audience) is
//! `401` `error="invalid_token"` with no detail that tells an attacker
//! which; missing scopes are `403` `error="insufficient_scope"` naming
//! them; a view older than its bound is `503`, so the gateway fails closed.

use crate::Verifier;
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use tessera_domain::gateway::{Routes, bearer_token, identity, missing_scopes};
use tessera_domain::kind::TokenKind;
use tessera_domain::verify::{Expectation, Failure, verify_cached};

mod ext_authz;
pub use ext_authz::ExtAuthz;

/// How old the revocation view may be before gateways are told `503`
/// (with a shared store; in one process the view is always current).
#[derive(Debug, Clone)]
pub struct ViewAge {
    /// When the view last caught up with the store (seconds since the epoch).
    pub caught_up: Arc<AtomicI64>,
    /// The bound, in seconds (`--max-view-staleness-secs`).
    pub max_age: i64,
}

/// One request through a gateway, as the gateway describes it.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The original `Host` (or `X-Forwarded-Host`).
    pub host: &'a str,
    /// The original request target (path and query).
    pub target: &'a str,
    /// The original `Authorization` value, if any.
    pub authorization: Option<&'a str>,
    /// The gateway, when a callers file is in force (audit summaries).
    pub gateway: Option<&'a str>,
}

/// The answer, in HTTP terms (both protocols carry it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Pass the request on, with these identity headers set on it.
    Allow(Vec<(String, String)>),
    /// Refuse it with `status`, and this `WWW-Authenticate` value, if any.
    Deny {
        /// The HTTP status the client gets.
        status: u16,
        /// The challenge.
        www_authenticate: Option<String>,
    },
}

impl Answer {
    fn deny(status: u16, challenge: Option<&str>) -> Self {
        Self::Deny {
            status,
            www_authenticate: challenge.map(str::to_owned),
        }
    }
}

/// Answers gateways; the routes may be replaced at any time (a reload).
#[derive(Clone)]
pub struct Gateway {
    v: Verifier,
    routes: Arc<ArcSwap<Routes>>,
    age: Option<ViewAge>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("routes", &self.routes.load().len())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Answers from `v`'s view under `routes`; `age` bounds the view's age.
    pub fn new(v: Verifier, routes: Routes, age: Option<ViewAge>) -> Self {
        Self {
            v,
            routes: Arc::new(ArcSwap::from_pointee(routes)),
            age,
        }
    }

    /// Puts `routes` in force.
    pub fn replace_routes(&self, routes: Routes) {
        self.routes.store(Arc::new(routes));
    }

    /// The identity headers' prefix in force.
    pub fn header_prefix(&self) -> String {
        self.routes.load().header_prefix().to_owned()
    }

    fn view_is_stale(&self) -> bool {
        self.age
            .as_ref()
            .is_some_and(|a| self.v.clock.now() - a.caught_up.load(Ordering::Relaxed) > a.max_age)
    }

    /// The answer to `asked`.
    pub fn answer(&self, asked: &Asked<'_>) -> Answer {
        let routes = self.routes.load();
        let Some(route) = routes.find(asked.host, asked.target) else {
            return Answer::deny(403, None);
        };
        if self.view_is_stale() {
            return Answer::deny(503, None);
        }
        let Some(token) = asked.authorization.and_then(bearer_token) else {
            return Answer::deny(401, Some("Bearer"));
        };
        let v = &self.v;
        let expect = Expectation {
            audience: &route.audience,
            kind: TokenKind::Access,
        };
        let outcome = verify_cached(
            token,
            v.keys.ring(),
            &v.policy,
            &expect,
            &v.view,
            v.clock.now(),
        );
        v.metrics.verify(outcome.as_ref().err().copied());
        let signed = match outcome {
            Ok(s) => s,
            Err(f) => {
                v.failures.record(asked.gateway, f);
                if f == Failure::UnknownKey {
                    v.keys.unknown_kid();
                }
                return Answer::deny(401, Some(r#"Bearer error="invalid_token""#));
            }
        };
        if let Some(scope) = missing_scopes(route, &signed.claims) {
            let challenge = format!(r#"Bearer error="insufficient_scope", scope="{scope}""#);
            return Answer::deny(403, Some(&challenge));
        }
        let prefix = routes.header_prefix();
        Answer::Allow(
            identity(route, &signed.claims)
                .iter()
                .map(|(name, value)| (format!("{prefix}{name}"), (*value).to_owned()))
                .collect(),
        )
    }
}
