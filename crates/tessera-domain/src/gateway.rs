//! What a gateway asks and what it is told: the routes file (which
//! audience, and which scopes, a request must carry, by host and path
//! prefix), the request's bearer token, and the answer's identity headers.
//!
//! ```toml
//! [headers]
//! prefix = "X-Tessera-"        # the identity headers' names (the default)
//!
//! [[route]]
//! host = "api.example.com"     # exact, "*.example.com" (any subdomain) or "*"
//! path_prefix = "/orders"      # whole segments: "/orders/1", not "/ordersx"
//! audience = "orders-api"      # the token's `aud` must hold it
//! scopes = ["orders:read"]     # optional: every one must be in `scope`
//! ```
//!
//! A request matching no route is refused, never verified against "any
//! audience": a token minted for one service must not open another's
//! routes (RFC 8725 §3.9, RFC 9068 §4). Of several matching routes the most
//! specific wins: an exact host over a wildcard, a longer wildcard over a
//! shorter, then the longest path prefix. A path a gateway and its upstream
//! could read differently matches nothing, so `/public/../admin` cannot
//! borrow the rule of `/public`: dot or empty segments (also as `..;`),
//! encoded `/`, `.`, `\` or `%`, malformed escapes or escaped bytes that
//! are not UTF-8 (`%c0%ae`), and any path whose readings by different
//! upstreams reach different routes: as sent, with escaped unreserved
//! characters decoded (`/orders/%77rite` is `/orders/write`, RFC 3986
//! §6.2.2.2), without `;` path parameters (Tomcat, Spring), and in any case
//! (`/orders/WRITE`, for case-insensitive servers).

#[path = "gateway_paths.rs"]
mod paths;

use crate::callers::line_of;
use crate::claims::Claims;
use paths::{
    decode_unreserved, folds_into_ascii, host_name, host_name_valid, unsafe_path, within,
    without_parameters, without_trailing_dots,
};
use serde::Deserialize;
use std::fmt;

/// The identity headers' default prefix.
pub const DEFAULT_HEADER_PREFIX: &str = "X-Tessera-";

/// The routes file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    routes: Vec<Route>,
    header_prefix: String,
}

/// One route: where it applies, and what a token must carry there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    host: HostPattern,
    path_prefix: String,
    /// The audience the token must hold.
    pub audience: String,
    /// Scopes the token must hold, every one.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: the suffix `.example.com`.
    Subdomain(String),
    Any,
}

impl HostPattern {
    fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim_end_matches('.').to_ascii_lowercase();
        if lower == "*" {
            Ok(Self::Any)
        } else if let Some(rest) = lower.strip_prefix("*.")
            && host_name_valid(rest)
            && rest.contains('.')
        {
            Ok(Self::Subdomain(format!(".{rest}")))
        } else if host_name_valid(&lower) {
            Ok(Self::Exact(lower))
        } else {
            Err(format!(
                "host {text:?}: a host name without port, \"*.<domain>\" (two labels at least) or \"*\""
            ))
        }
    }

    /// How specific a match of `host` is, or `None` when it does not match.
    fn rank(&self, host: &str) -> Option<(u8, usize)> {
        match self {
            Self::Exact(h) => (h == host).then_some((2, h.len())),
            Self::Subdomain(s) => {
                (host.len() > s.len() && host.ends_with(s.as_str())).then_some((1, s.len()))
            }
            Self::Any => Some((0, 0)),
        }
    }
}

/// A routes file that cannot be used, with the line at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutesError {
    /// 1-based line of the fault.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RoutesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for RoutesError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    headers: RawHeaders,
    #[serde(default)]
    route: Vec<toml::Spanned<RawRoute>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    prefix: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    host: String,
    #[serde(default = "root")]
    path_prefix: String,
    audience: String,
    #[serde(default)]
    scopes: Vec<String>,
}

fn root() -> String {
    "/".to_owned()
}

/// A character of an RFC 6749 §3.3 scope-token (so it also fits, unquoted,
/// in a `WWW-Authenticate` quoted string).
fn scope_char(c: char) -> bool {
    matches!(c, '!' | '#'..='[' | ']'..='~')
}

impl RawRoute {
    fn route(self) -> Result<Route, String> {
        let host = HostPattern::parse(&self.host)?;
        let plain = |c: char| c.is_ascii_graphic() && !matches!(c, '?' | '#' | '%' | ';' | '*');
        if !self.path_prefix.starts_with('/')
            || unsafe_path(&self.path_prefix)
            || !self.path_prefix.chars().all(plain)
        {
            return Err(format!(
                "path_prefix {:?}: an absolute path of plain segments (\"/orders\"; no query, escape, ';' or '*')",
                self.path_prefix
            ));
        }
        if self.audience.trim().is_empty() || self.audience == "*" {
            return Err("audience: one audience, never empty or \"*\"".to_owned());
        }
        if let Some(bad) = self
            .scopes
            .iter()
            .find(|s| s.is_empty() || !s.chars().all(scope_char))
        {
            return Err(format!(
                "scopes: {bad:?} is no scope (RFC 6749 §3.3: printable ASCII, no space, quote or backslash)"
            ));
        }
        let path_prefix = match self.path_prefix.trim_end_matches('/') {
            "" => "/".to_owned(),
            p => p.to_owned(),
        };
        Ok(Route {
            host,
            path_prefix,
            audience: self.audience,
            scopes: self.scopes,
        })
    }
}

impl Routes {
    /// Parses a routes file. Every fault names its line.
    pub fn parse(text: &str) -> Result<Self, RoutesError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| RoutesError {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim().to_owned(),
        })?;
        let header_prefix = raw
            .headers
            .prefix
            .unwrap_or_else(|| DEFAULT_HEADER_PREFIX.to_owned());
        let token_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
        if header_prefix.len() < 3
            || !header_prefix.ends_with('-')
            || !header_prefix.chars().all(token_char)
        {
            return Err(RoutesError {
                line: 1,
                message: format!(
                    "headers.prefix {header_prefix:?}: letters, digits and '-', ending in '-' (\"X-Tessera-\")"
                ),
            });
        }
        let mut routes: Vec<(usize, Route)> = Vec::new();
        for spanned in raw.route {
            let line = line_of(text, spanned.span().start);
            let route =
                (spanned.into_inner().route()).map_err(|message| RoutesError { line, message })?;
            if let Some((first, _)) = routes.iter().find(|(_, r)| r.same_place(&route)) {
                return Err(RoutesError {
                    line,
                    message: format!(
                        "this route's host and path_prefix are line {first}'s (in any case): one route per place"
                    ),
                });
            }
            routes.push((line, route));
        }
        if routes.is_empty() {
            return Err(RoutesError {
                line: 1,
                message: "no [[route]]: every request would be refused (an empty file is more often a write cut short than a policy)".into(),
            });
        }
        let routes = routes.into_iter().map(|(_, r)| r).collect();
        Ok(Self {
            routes,
            header_prefix,
        })
    }

    /// How many routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// True when there is no route (every request is refused).
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The identity headers' prefix.
    pub fn header_prefix(&self) -> &str {
        &self.header_prefix
    }

    /// The most specific route for a request to `host` (a `Host` value: any
    /// port is dropped, case ignored) and `target` (its request target:
    /// the query is dropped). `None`: no route, or a path that could be
    /// read two ways.
    pub fn find(&self, host: &str, target: &str) -> Option<&Route> {
        let host = host_name(host)?;
        // A request target never holds a fragment (RFC 9112 §3.2): a `#`
        // anywhere is refused, not taken for one (Go's servers keep what
        // follows it in the path).
        let path = target.split('?').next().unwrap_or_default();
        if !path.starts_with('/') || target.contains('#') || unsafe_path(path) {
            return None;
        }
        let decoded = decode_unreserved(path)?;
        let bare = without_parameters(&decoded);
        if unsafe_path(&bare) || folds_into_ascii(&decoded) {
            return None;
        }
        let trimmed = without_trailing_dots(&bare);
        // Every reading must reach the same route (or none).
        let first = self.best(&host, path, false);
        let readings = [
            (&decoded, false),
            (&bare, false),
            (&bare, true),
            (&trimmed, true),
        ];
        let agree = readings
            .iter()
            .all(|(p, fold)| match (first, self.best(&host, p, *fold)) {
                (Some(a), Some(b)) => std::ptr::eq(a, b),
                (a, b) => a.is_none() && b.is_none(),
            });
        if agree { first } else { None }
    }

    /// The most specific route for `host` and `path`, comparing paths in
    /// any case when `fold`.
    fn best(&self, host: &str, path: &str, fold: bool) -> Option<&Route> {
        self.routes
            .iter()
            .filter_map(|r| {
                let host_rank = r.host.rank(host)?;
                let rank = (host_rank, r.path_prefix.len());
                within(path, &r.path_prefix, fold).then_some((rank, r))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, r)| r)
    }
}

impl Route {
    /// The same host and path prefix, in any case.
    fn same_place(&self, other: &Route) -> bool {
        self.host == other.host && self.path_prefix.eq_ignore_ascii_case(&other.path_prefix)
    }
}

/// The bearer token of an `Authorization` value (RFC 6750 §2.1: the scheme
/// in any case, one space, a b64token). `None`: no usable token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, token) = authorization.split_once(' ')?;
    let b64token = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && token.chars().all(b64token))
        .then_some(token)
}

/// The scopes of `route` that `claims` lacks, space-separated (the
/// `scope` parameter of RFC 6750 §3's `insufficient_scope`), or `None`.
pub fn missing_scopes(route: &Route, claims: &Claims) -> Option<String> {
    let held: Vec<&str> = claims
        .scope
        .as_deref()
        .map(|s| s.split(' ').collect())
        .unwrap_or_default();
    route
        .scopes
        .iter()
        .any(|s| !held.contains(&s.as_str()))
        .then(|| route.scopes.join(" "))
}

/// The identity header suffixes, in the order [`identity`] gives them.
pub const IDENTITY_HEADERS: [&str; 5] = ["Subject", "Scopes", "Client-Id", "Token-Id", "Audience"];

/// The identity the upstream is told, by header suffix: every one, empty
/// when the token has none, so a gateway that copies them always
/// overwrites what a client sent. `Audience` is the route's.
pub fn identity<'a>(route: &'a Route, claims: &'a Claims) -> [(&'static str, &'a str); 5] {
    [
        ("Subject", claims.sub.as_str()),
        ("Scopes", claims.scope.as_deref().unwrap_or_default()),
        ("Client-Id", claims.client_id.as_deref().unwrap_or_default()),
        ("Token-Id", claims.jti.as_str()),
        ("Audience", route.audience.as_str()),
    ]
}

#[cfg(test)]
#[path = "gateway_tests.rs"]
mod tests;
