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
//! verify = "caller"   # Verify needs a known caller ("open": anyone)
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
//! revoke = ["jti", "family"]           # and "subject", "kid"
//! rate_per_second = 200                # optional per-caller limit
//! burst = 400
//! ```

use crate::sha256;
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
    /// One access token.
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
    /// Any known caller (whatever its `rpcs`).
    Caller,
}

/// Which of the always-available RPCs need a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessPolicy {
    /// `Verify`.
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
    revoke: HashSet<RevokeRight>,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    access: AccessPolicy,
    #[serde(default)]
    caller: Vec<toml::Spanned<RawCaller>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCaller {
    id: String,
    #[serde(default)]
    key_sha256: Vec<String>,
    #[serde(default)]
    tls_names: Vec<String>,
    #[serde(default)]
    rpcs: Vec<String>,
    #[serde(default)]
    keys_admin: bool,
    #[serde(default)]
    audiences: Vec<String>,
    #[serde(default)]
    extra_claims: Vec<String>,
    #[serde(default)]
    revoke: Vec<RevokeRight>,
    rate_per_second: Option<u32>,
    burst: Option<u32>,
}

impl Callers {
    /// Parses a callers file. Every fault names its line.
    pub fn parse(text: &str) -> Result<Self, CallersError> {
        let raw: RawFile = toml::from_str(text).map_err(|e| CallersError {
            line: e.span().map_or(1, |s| line_of(text, s.start)),
            message: e.message().trim().to_owned(),
        })?;
        let mut callers = Vec::with_capacity(raw.caller.len());
        let mut ids = HashSet::new();
        for spanned in raw.caller {
            let line = line_of(text, spanned.span().start);
            let fail = |message: String| CallersError { line, message };
            let caller = spanned.into_inner().check().map_err(fail)?;
            if !ids.insert(caller.id.clone()) {
                return Err(fail(format!("caller id {:?} appears twice", caller.id)));
            }
            callers.push(Arc::new(caller));
        }
        let all_hashes = callers.iter().flat_map(|c| &c.key_hashes);
        if all_hashes.clone().count() != all_hashes.collect::<HashSet<_>>().len() {
            return Err(CallersError {
                line: 1,
                message: "one key_sha256 is given to two callers".into(),
            });
        }
        Ok(Self {
            access: raw.access,
            callers,
        })
    }

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
    /// verified client certificate (its subject CN and SANs).
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

impl RawCaller {
    /// The caller this entry grants, or what is wrong with it (naming the
    /// caller, never a key). Checked in the order the fields are documented.
    fn check(self) -> Result<Caller, String> {
        let id = self.id;
        if id.is_empty() || id.len() > 64 || !id.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!(
                "caller id {id:?}: 1 to 64 printable ASCII characters"
            ));
        }
        if self.key_sha256.is_empty() && self.tls_names.is_empty() {
            return Err(format!(
                "caller {id}: no credential; give key_sha256 (see `tessera callers add`) or tls_names"
            ));
        }
        let key_hashes = key_hashes(&id, &self.key_sha256)?;
        let rpcs = granted_rpcs(&id, &self.rpcs, self.keys_admin)?;
        let rate = rate(&id, self.rate_per_second, self.burst)?;
        Ok(Caller {
            id,
            key_hashes,
            tls_names: self.tls_names,
            rpcs,
            audiences: self.audiences,
            extra_claims: self.extra_claims.into_iter().collect(),
            revoke: self.revoke.into_iter().collect(),
            rate,
        })
    }
}

/// The stored key hashes, each 64 hex digits.
fn key_hashes(id: &str, hex: &[String]) -> Result<Vec<[u8; 32]>, String> {
    hex.iter()
        .map(|h| parse_hash(h).ok_or_else(|| format!("caller {id}: key_sha256 must be 64 hex digits (the SHA-256 of the key, not the key)")))
        .collect()
}

/// The RPCs granted: each one named in `rpcs` (known, and not key
/// administration, which only `keys_admin` grants, so it is never granted
/// by listing part of it), plus every key-administration RPC with
/// `keys_admin`.
fn granted_rpcs(id: &str, named: &[String], keys_admin: bool) -> Result<HashSet<String>, String> {
    let mut rpcs = HashSet::new();
    for rpc in named {
        if KEY_ADMIN_RPCS.contains(&rpc.as_str()) && rpc != "CompromiseKey" {
            return Err(format!(
                "caller {id}: {rpc} is key administration; grant it with keys_admin = true"
            ));
        }
        if !RPCS.contains(&rpc.as_str()) {
            return Err(format!(
                "caller {id}: unknown rpc {rpc:?}; known: {}",
                RPCS.join(", ")
            ));
        }
        rpcs.insert(rpc.clone());
    }
    if keys_admin {
        rpcs.extend(KEY_ADMIN_RPCS.iter().map(|r| (*r).to_owned()));
    }
    Ok(rpcs)
}

/// The per-caller rate: none, or `rate_per_second` with a burst of as many
/// unless `burst` says otherwise.
fn rate(id: &str, per_second: Option<u32>, burst: Option<u32>) -> Result<Option<Rate>, String> {
    match (per_second, burst) {
        (None, None) => Ok(None),
        (Some(0), _) | (_, Some(0)) => Err(format!(
            "caller {id}: rate_per_second and burst must be above 0"
        )),
        (Some(per_second), burst) => Ok(Some(Rate {
            per_second,
            burst: burst.unwrap_or(per_second),
        })),
        (None, Some(_)) => Err(format!("caller {id}: burst needs rate_per_second")),
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
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
