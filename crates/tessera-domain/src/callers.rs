//! Who may call Tessera, and what each caller may do: the callers file.
//!
//! A caller has an id, one or more credentials — bearer service keys, of
//! which only the SHA-256 is stored (a key is 256 random bits, so a plain
//! hash is as strong as a slow one and costs a microsecond), and/or the
//! identities of its mTLS client certificates — and rights: which RPCs, which
//! audiences it may `Issue` for and which `extra_claims` names, which targets
//! it may revoke. Parsing refuses anything it does not understand, naming the
//! line, so a typo never silently grants or drops a right.
//!
//! ```toml
//! [access]            # optional; these are the defaults
//! verify = "caller"   # Verify needs a caller granted it ("open": anyone)
//! jwks = "open"       # GetJwks, WatchKeys and the HTTP JWKS
//! health = "open"     # gRPC health, reflection, /metrics, /livez, /readyz
//!
//! [[caller]]
//! id = "orders-api"
//! key_sha256 = ["9f86d0…"]             # `tessera callers add` prints one
//! tls_names = ["orders.internal"]      # client certificate CN or SAN
//! rpcs = ["Issue", "Refresh", "Revoke"]
//! audiences = ["orders-api"]           # "*": any
//! extra_claims = ["tenant"]
//! revoke = ["token", "family"]         # and "jti", "subject", "kid"
//! verify_strong = false                # Verify with STRONG (a store read)
//! relay = false                        # Tessera's services: act for a caller
//! gateway = false                      # a gateway: forward-auth, ext_authz
//! redeem_from = ["account-svc/password_reset"]  # others' purpose tokens
//! rate_per_second = 200                # optional per-caller limit
//! burst = 400
//! ```

use crate::kind::TokenKind;
use crate::sha256;

mod parse;
pub(crate) use parse::line_of;
use serde::Deserialize;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

/// Every RPC a caller may be granted, by its method name.
pub const RPCS: &[&str] = &[
    "Issue",
    "Refresh",
    "IssuePurposeToken",
    "RedeemPurposeToken",
    "Verify",
    "Revoke",
    "WatchRevocations",
    "GetJwks",
    "WatchKeys",
    "ListKeys",
    "RotateKeys",
    "RetireKey",
    "CompromiseKey",
];

/// The key-administration RPCs that `keys_admin = true` grants.
pub const KEY_ADMIN_RPCS: &[&str] = &["ListKeys", "RotateKeys", "RetireKey", "CompromiseKey"];

/// What a revocation targets, as a right.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RevokeRight {
    /// An access token given whole, of one of the caller's audiences.
    Token,
    /// Any access token, by its id (reaches every audience).
    Jti,
    /// A refresh-token family (a session).
    Family,
    /// Every session of a subject.
    Subject,
    /// A signing key (a kill).
    Kid,
}

/// Whether a class of RPCs needs a known caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Anyone who can reach the port.
    Open,
    /// A known caller: for `Verify`, one granted it in `rpcs`; for the
    /// JWKS and health, any.
    Caller,
}

/// Which of the always-available RPCs need a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessPolicy {
    /// `Verify`: open to anyone, or only to callers with `Verify` in
    /// their `rpcs`.
    pub verify: Access,
    /// `GetJwks`, `WatchKeys`, and the HTTP JWKS and discovery documents.
    pub jwks: Access,
    /// gRPC health and reflection, `/metrics`, and the HTTP probes
    /// `/livez` and `/readyz`.
    pub health: Access,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self {
            verify: Access::Caller,
            jwks: Access::Open,
            health: Access::Open,
        }
    }
}

/// A per-caller rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Calls per second, sustained.
    pub per_second: u32,
    /// Calls allowed at once after a quiet spell.
    pub burst: u32,
}

/// One known caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// The caller's id (logs, metrics, audit).
    pub id: String,
    key_hashes: Vec<[u8; 32]>,
    tls_names: Vec<String>,
    rpcs: HashSet<String>,
    audiences: Vec<String>,
    extra_claims: HashSet<String>,
    /// Scope patterns this caller may put in tokens (`orders:*` matches
    /// `orders:read`); `None`: any scope.
    scopes: Option<Vec<String>>,
    /// Other `client_id` values this caller may put in tokens (its own id
    /// always).
    client_ids: Vec<String>,
    revoke: HashSet<RevokeRight>,
    /// May `Verify` with STRONG consistency (each call reads the store).
    verify_strong: bool,
    /// May act for another caller (`x-tessera-on-behalf-of`): Tessera's
    /// own services, relaying a caller's request.
    relay: bool,
    /// A gateway: may ask the forward-auth endpoint and Envoy's
    /// `Authorization/Check` about its clients' tokens.
    gateway: bool,
    /// Purpose tokens issued by other callers this caller may redeem: the
    /// issuing caller's id and the kind (`None`: any kind).
    redeem_from: Vec<(String, Option<TokenKind>)>,
    /// The per-caller rate limit, if any.
    pub rate: Option<Rate>,
}

impl fmt::Debug for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Key hashes are not secrets, but nothing gains from printing them.
        f.debug_struct("Caller")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Caller {
    /// May this caller call `rpc` (a method name)?
    pub fn may_call(&self, rpc: &str) -> bool {
        self.rpcs.contains(rpc)
    }

    /// May this caller put `scope` in a token? Patterns end in `*` to match
    /// a prefix (`orders:*`), or match exactly.
    pub fn may_grant_scope(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|patterns| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => scope.starts_with(prefix),
                None => p == scope,
            })
        })
    }

    /// May this caller name `client_id` as the token's client? Its own id,
    /// or one granted by `client_ids`.
    pub fn may_name_client(&self, client_id: &str) -> bool {
        client_id == self.id || self.client_ids.iter().any(|c| c == client_id)
    }

    /// May this caller `Issue` tokens for `audience`?
    pub fn may_issue_for(&self, audience: &str) -> bool {
        self.audiences.iter().any(|a| a == "*" || a == audience)
    }

    /// May this caller put the extra claim `name` into tokens?
    pub fn may_add_claim(&self, name: &str) -> bool {
        self.extra_claims.contains(name)
    }

    /// May this caller revoke this kind of target?
    pub fn may_revoke(&self, target: RevokeRight) -> bool {
        self.revoke.contains(&target)
    }

    /// May this caller `Verify` with STRONG consistency? Each such call
    /// reads the store, so it is a right of its own.
    pub fn may_verify_strong(&self) -> bool {
        self.verify_strong
    }

    /// May this caller name another as the one it acts for? Only Tessera's
    /// own services relay; anyone else could write any name into the
    /// audit trail beside its own.
    pub fn may_relay(&self) -> bool {
        self.relay
    }

    /// May this caller ask about its clients' tokens as a gateway
    /// (forward-auth, Envoy `ext_authz`)?
    pub fn may_gate(&self) -> bool {
        self.gateway
    }

    /// May this caller redeem a purpose token of `kind` that `owner`
    /// issued? Its own, or one granted by `redeem_from`.
    pub fn may_redeem(&self, owner: &str, kind: TokenKind) -> bool {
        owner == self.id
            || self
                .redeem_from
                .iter()
                .any(|(o, k)| o == owner && k.is_none_or(|k| k == kind))
    }

    /// The callers whose purpose tokens this one may redeem (checked
    /// against the file once every caller is read).
    fn redeems_from(&self) -> impl Iterator<Item = &str> {
        self.redeem_from.iter().map(|(o, _)| o.as_str())
    }
}

/// The parsed callers file.
#[derive(Debug, Clone, Default)]
pub struct Callers {
    /// Which always-available RPCs need a caller.
    pub access: AccessPolicy,
    callers: Vec<Arc<Caller>>,
}

/// A callers file that cannot be used, with the line at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct CallersError {
    /// 1-based line of the fault.
    pub line: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Callers {
    /// Number of callers.
    pub fn len(&self) -> usize {
        self.callers.len()
    }

    /// True when the file names no caller.
    pub fn is_empty(&self) -> bool {
        self.callers.is_empty()
    }

    /// The caller presenting the bearer service key `key`. Every stored hash
    /// is compared, in constant time, so neither the answer's timing nor its
    /// position leaks which bytes matched.
    pub fn by_key(&self, key: &str) -> Option<&Arc<Caller>> {
        let presented = sha256(key.as_bytes());
        let mut found = None;
        for caller in &self.callers {
            for hash in &caller.key_hashes {
                let same =
                    aws_lc_rs::constant_time::verify_slices_are_equal(hash, &presented).is_ok();
                if same && found.is_none() {
                    found = Some(caller);
                }
            }
        }
        found
    }

    /// The caller whose `tls_names` holds one of the identities of a
    /// verified client certificate, typed as the edge reports them
    /// (`dns:…`, `uri:…`, `email:…`, `cn:…`).
    pub fn by_tls_name<'a>(
        &self,
        mut names: impl Iterator<Item = &'a str>,
    ) -> Option<&Arc<Caller>> {
        names.find_map(|n| {
            self.callers
                .iter()
                .find(|c| c.tls_names.iter().any(|t| t == n))
        })
    }

    /// Every caller (ids for logs and metrics).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Caller>> {
        self.callers.iter()
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new bearer service key (256 random bits, `tsk_` + base64url) and the
/// SHA-256 the callers file stores for it.
pub fn new_service_key() -> (crate::Secret, String) {
    let key = format!("tsk_{}", crate::b64url_encode(crate::random_bytes(32)));
    let hash = hex(&sha256(key.as_bytes()));
    (crate::Secret::new(key.into_bytes()), hash)
}

#[cfg(test)]
#[path = "callers_tests.rs"]
mod tests;
