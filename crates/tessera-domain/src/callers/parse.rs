//! Reading a callers file: the TOML shape, each entry checked in the
//! order its fields are documented, every fault named with its line, and
//! no credential given to two callers.

use super::{AccessPolicy, Caller, Callers, CallersError, KEY_ADMIN_RPCS, RPCS, Rate, RevokeRight};
use crate::kind::TokenKind;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

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
    scopes: Option<Vec<String>>,
    #[serde(default)]
    client_ids: Vec<String>,
    #[serde(default)]
    revoke: Vec<RevokeRight>,
    #[serde(default)]
    verify_strong: bool,
    #[serde(default)]
    relay: bool,
    #[serde(default)]
    gateway: bool,
    #[serde(default)]
    redeem_from: Vec<String>,
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
        let mut seen = Seen::default();
        for spanned in raw.caller {
            let line = line_of(text, spanned.span().start);
            let fail = |message: String| CallersError { line, message };
            let caller = spanned.into_inner().check().map_err(fail)?;
            seen.admit(&caller, line).map_err(fail)?;
            callers.push(Arc::new(caller));
        }
        // A grant names a caller of this file: a typo must not stand as a
        // grant to whoever later takes that id.
        for (caller, line) in &seen.order {
            if let Some(owner) = callers[*caller]
                .redeems_from()
                .find(|o| !seen.ids.contains_key(*o))
            {
                return Err(CallersError {
                    line: *line,
                    message: format!(
                        "caller {}: redeem_from names {owner:?}, which is no caller of this file",
                        callers[*caller].id
                    ),
                });
            }
        }
        Ok(Self {
            access: raw.access,
            callers,
        })
    }
}

/// What the callers already parsed hold, each with its line: an id, a key
/// or a certificate name given twice is refused at the second's line (one
/// credential must name one caller, or the first would silently win).
#[derive(Default)]
struct Seen {
    ids: HashMap<String, usize>,
    keys: HashMap<[u8; 32], usize>,
    names: HashMap<String, usize>,
    /// Each caller's index and line, in file order.
    order: Vec<(usize, usize)>,
}

impl Seen {
    fn admit(&mut self, caller: &Caller, line: usize) -> Result<(), String> {
        self.order.push((self.order.len(), line));
        if let Some(first) = self.ids.insert(caller.id.clone(), line) {
            return Err(format!(
                "caller id {:?} appears twice (also line {first})",
                caller.id
            ));
        }
        for hash in &caller.key_hashes {
            if let Some(first) = self.keys.insert(*hash, line) {
                return Err(format!(
                    "caller {}: one key_sha256 is given to two callers (also line {first})",
                    caller.id
                ));
            }
        }
        for name in &caller.tls_names {
            if let Some(first) = self.names.insert(name.clone(), line) {
                return Err(format!(
                    "caller {}: tls name {name:?} is given to two callers (also line {first})",
                    caller.id
                ));
            }
        }
        Ok(())
    }
}

/// A `tls_names` entry in its typed form: `dns:`, `uri:` (SPIFFE IDs),
/// `email:` or `cn:` and the name, as the edge reports a certificate's
/// identities. An entry without a type is a DNS name; a URI must say
/// `uri:`; the subject CN counts only when an entry asks for it with
/// `cn:` (a CN is free text any CA may put in, SANs are typed).
fn typed_name(id: &str, entry: &str) -> Result<String, String> {
    let bad = |why: &str| format!("caller {id}: tls_names entry {entry:?}: {why}");
    let (kind, name) = match entry.split_once(':') {
        Some((k, n))
            if ["dns", "uri", "email", "cn"].contains(&k.to_ascii_lowercase().as_str()) =>
        {
            (k.to_ascii_lowercase(), n)
        }
        Some(_) => return Err(bad("say what it names: dns:, uri:, email: or cn:")),
        None => ("dns".to_owned(), entry),
    };
    if name.is_empty() || name.len() > 512 || name.chars().any(char::is_control) {
        return Err(bad("the name must be 1 to 512 printable characters"));
    }
    Ok(format!("{kind}:{name}"))
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
        let tls_names = self
            .tls_names
            .iter()
            .map(|n| typed_name(&id, n))
            .collect::<Result<Vec<_>, _>>()?;
        let rpcs = granted_rpcs(&id, &self.rpcs, self.keys_admin)?;
        let rate = rate(&id, self.rate_per_second, self.burst)?;
        let redeem_from = self
            .redeem_from
            .iter()
            .map(|g| redeem_grant(&id, g))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Caller {
            id,
            key_hashes,
            tls_names,
            rpcs,
            audiences: self.audiences,
            extra_claims: self.extra_claims.into_iter().collect(),
            scopes: self.scopes,
            client_ids: self.client_ids,
            revoke: self.revoke.into_iter().collect(),
            verify_strong: self.verify_strong,
            relay: self.relay,
            gateway: self.gateway,
            redeem_from,
            rate,
        })
    }
}

/// A `redeem_from` entry: `"<caller id>/<kind>"`, the kind
/// `password_reset`, `email_verification` or `*` (any).
fn redeem_grant(id: &str, entry: &str) -> Result<(String, Option<TokenKind>), String> {
    let bad = || {
        format!(
            "caller {id}: redeem_from entry {entry:?}: give \"<caller id>/<kind>\", the kind password_reset, email_verification or *"
        )
    };
    let (owner, kind) = entry.rsplit_once('/').ok_or_else(bad)?;
    let kind = match kind {
        "password_reset" => Some(TokenKind::PasswordReset),
        "email_verification" => Some(TokenKind::EmailVerification),
        "*" => None,
        _ => return Err(bad()),
    };
    if owner.is_empty() || owner == id {
        return Err(bad());
    }
    Ok((owner.to_owned(), kind))
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

/// The 1-based line of byte `offset` in `text` (a TOML error's span).
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |t| t.matches('\n').count() + 1)
}
