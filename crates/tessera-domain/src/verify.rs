//! The Verify pipeline (`docs/architecture.md`, "Verify"), in order, failing closed:
//! 1 size and shape, 2 header, 3 signature, 4 claims, 5 revocation.
//!
//! Steps 1–4 are pure functions of the token, the key set, the policy and
//! `now`; step 5 reads a [`MemoryRevocations`] view (or, for STRONG
//! consistency, the caller asks the store with the same [`RevocationQuery`]).
//!
//! Here the pure pipeline; [`Failure`] (the one answer) in `failure`, the
//! JSON shapes in `parse`, the ring-and-store variants ([`verify_cached`],
//! [`verify_strong`]) in `cached`, and the keyless reading in [`inspect`].

use crate::b64url_decode;
use crate::claims::Claims;
use crate::clock::UnixTime;
use crate::keys::{Algorithm, KeySet, VerifyingKey};
use crate::kind::TokenKind;
use crate::policy::{MAX_TOKEN_BYTES, Policy};
use crate::revocation::{MemoryRevocations, RevocationQuery};
use serde_json::Value;

mod cached;
mod failure;
pub mod inspect;
mod parse;
// Signing is the key's (`keys::sign`); the services and benches name it here.
pub use crate::keys::sign;
pub use cached::{verify_cached, verify_strong};
pub use failure::Failure;
pub use parse::MAX_NUMERIC_DATE;
use parse::{MINTED_HEADERS, StrictObject, strict_object};

/// A token whose steps 1–3 passed: the signature is ours.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The parsed claims.
    pub claims: Claims,
    /// The key that signed it.
    pub kid: String,
    /// The `typ` header mapped to a kind; `None` for an unknown `typ`.
    pub kind: Option<TokenKind>,
}

impl Signed {
    /// The step-5 question for this token.
    pub fn revocation_query(&self) -> RevocationQuery<'_> {
        RevocationQuery {
            jti: &self.claims.jti,
            family_id: self.claims.sid.as_deref(),
            subject: &self.claims.sub,
            subject_version: self.claims.ver,
            kid: &self.kid,
        }
    }
}

/// What the caller expects of the token.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    /// Must be in `aud`.
    pub audience: &'a str,
    /// Must match `typ`.
    pub kind: TokenKind,
}

/// Steps 1–3: shape, header, signature. Also parses the claims (their JSON
/// shape is part of step 1, but it is only worth parsing once signed).
pub fn verify_signature(token: &str, keys: &KeySet, policy: &Policy) -> Result<Signed, Failure> {
    let compact = Compact::split(token)?;
    let (kid, key) = header_key(&compact.header, keys, policy)?;
    compact.check_signature(key)?;

    // Typed only once signed: an unsigned payload's types are no one's
    // business, and the answer must not depend on which check ran first.
    let claims = parse::claims(&compact.payload)?;
    let kind = compact
        .header
        .get("typ")
        .and_then(Value::as_str)
        .and_then(TokenKind::from_typ);
    Ok(Signed {
        claims,
        kid: kid.to_owned(),
        kind,
    })
}

/// A token that passed step 1: three parts, a header that is a JSON object
/// with unique names, and a payload that at least starts as an object.
struct Compact<'t> {
    /// `b64(header).b64(payload)`: the exact bytes the signature covers.
    signing_input: &'t [u8],
    /// The third part, still encoded.
    s64: &'t str,
    header: StrictObject,
    payload: Vec<u8>,
}

impl<'t> Compact<'t> {
    /// Step 1: size and shape.
    fn split(token: &'t str) -> Result<Self, Failure> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(Failure::Malformed);
        }
        let mut parts = token.splitn(4, '.');
        let (Some(h64), Some(p64), Some(s64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Failure::Malformed);
        };
        let header = strict_object(&b64url_decode(h64).ok_or(Failure::Malformed)?)?;
        let payload = b64url_decode(p64).ok_or(Failure::Malformed)?;
        if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Failure::Malformed);
        }
        Ok(Self {
            signing_input: &token.as_bytes()[..h64.len() + 1 + p64.len()],
            s64,
            header,
            payload,
        })
    }

    /// Step 3: the signature over the exact bytes received.
    fn check_signature(&self, key: &VerifyingKey) -> Result<(), Failure> {
        // The signature's shape is checked after `alg` (step 2), so an
        // unsigned `alg: none` token is reported as what it is.
        if self.s64.is_empty()
            || !self
                .s64
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(Failure::Malformed);
        }
        if !key.verify(self.signing_input, self.s64) {
            return Err(Failure::BadSignature);
        }
        Ok(())
    }
}

/// Step 2: the header, and the published key it names with its `kid`.
fn header_key<'a>(
    header: &'a StrictObject,
    keys: &'a KeySet,
    policy: &Policy,
) -> Result<(&'a str, &'a VerifyingKey), Failure> {
    // `alg` first, so `none` and HS256 never reach a key.
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Algorithm::from_name)
        .filter(|a| policy.allowed_algorithms.contains(a))
        .ok_or(Failure::AlgorithmNotAllowed)?;
    // Only what we mint: `jku`/`jwk`/`x5u`/`x5c` would let the token pick
    // its own key, `crit` names extensions we do not implement, `b64: false`
    // changes what the signature covers; any other name is one whose
    // meaning to another verifier we cannot vouch for.
    if header
        .0
        .iter()
        .any(|(name, _)| !MINTED_HEADERS.contains(&name.as_str()))
    {
        return Err(Failure::UnsupportedHeader);
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or(Failure::UnknownKey)?;
    let key = keys.get(kid).ok_or(Failure::UnknownKey)?;
    if key.algorithm() != alg {
        return Err(Failure::AlgorithmNotAllowed);
    }
    Ok((kid, key))
}

/// Step 4: time, issuer, audience and kind.
pub fn check_claims(
    signed: &Signed,
    expect: &Expectation<'_>,
    policy: &Policy,
    now: UnixTime,
) -> Result<(), Failure> {
    let c = &signed.claims;
    let skew = policy.clock_skew;
    // RFC 7519 4.1.4: not accepted on or after `exp`.
    if now >= c.exp.saturating_add(skew) {
        return Err(Failure::Expired);
    }
    if now.saturating_add(skew) < c.nbf || c.iat > now.saturating_add(skew) {
        return Err(Failure::NotYetValid);
    }
    if c.iss != policy.issuer {
        return Err(Failure::WrongIssuer);
    }
    if !c.aud.contains(expect.audience) {
        return Err(Failure::WrongAudience);
    }
    if signed.kind != Some(expect.kind) {
        return Err(Failure::WrongTokenKind);
    }
    Ok(())
}

/// Steps 1–5 against the in-memory revocation view: the default Verify.
pub fn verify(
    token: &str,
    keys: &KeySet,
    policy: &Policy,
    expect: &Expectation<'_>,
    revocations: &MemoryRevocations,
    now: UnixTime,
) -> Result<Signed, Failure> {
    let signed = verify_signature(token, keys, policy)?;
    check_after_signature(&signed, expect, policy, revocations, now)?;
    Ok(signed)
}

/// Steps 4 and 5.
fn check_after_signature(
    signed: &Signed,
    expect: &Expectation<'_>,
    policy: &Policy,
    revocations: &MemoryRevocations,
    now: UnixTime,
) -> Result<(), Failure> {
    check_claims(signed, expect, policy, now)?;
    if revocations.is_revoked(&signed.revocation_query(), now) {
        return Err(Failure::Revoked);
    }
    Ok(())
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "verify_rules_tests.rs"]
mod rules_tests;

#[cfg(test)]
#[path = "verify_props.rs"]
mod props;
