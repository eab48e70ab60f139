//! The Verify pipeline (`docs/architecture.md`, "Verify"), in order, failing closed:
//! 1 size and shape, 2 header, 3 signature, 4 claims, 5 revocation.
//!
//! Steps 1–4 are pure functions of the token, the key set, the policy and
//! `now`; step 5 reads a [`MemoryRevocations`] view (or, for STRONG
//! consistency, the caller asks the store with the same [`RevocationQuery`]).

use crate::b64url_decode;
use crate::claims::Claims;
use crate::clock::UnixTime;
use crate::keys::{Algorithm, KeyRing, KeySet};
use crate::kind::TokenKind;
use crate::policy::{MAX_TOKEN_BYTES, Policy};
use crate::revocation::{MemoryRevocations, RevocationQuery};
use crate::store::RevocationStore;
use serde_json::Value;
use std::sync::Arc;

pub mod inspect;
mod parse;
pub use parse::MAX_NUMERIC_DATE;
use parse::{MINTED_HEADERS, StrictObject, strict_object};

/// Why a token is not valid. Exactly one reason: the first failing step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Not a well-formed JWS compact token of JSON objects, or too large.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// No `kid`, or no published key by that id.
    UnknownKey,
    /// `alg` is `none`, not allowed, or not the named key's algorithm.
    AlgorithmNotAllowed,
    /// Past `exp` (plus skew).
    Expired,
    /// Before `nbf`, or `iat` in the future (beyond skew).
    NotYetValid,
    /// `iss` is not ours.
    WrongIssuer,
    /// `aud` lacks the expected audience.
    WrongAudience,
    /// `typ` is not the expected kind.
    WrongTokenKind,
    /// Revoked: jti, family, subject version or key.
    Revoked,
    /// A header parameter Tessera never mints (anything but `alg`, `kid`
    /// and `typ`: `jku`, `jwk`, `x5c`, `crit`, `b64`, `zip`, …), whatever
    /// its value.
    UnsupportedHeader,
    /// A required claim is absent.
    MissingClaim,
    /// A claim is present but of the wrong type or out of range (e.g. `exp`
    /// as a string, a fraction or past year 9999; `aud` as a number).
    InvalidClaim,
}

impl Failure {
    /// A stable lower-case name, for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongTokenKind => "wrong_token_kind",
            Self::Revoked => "revoked",
            Self::UnsupportedHeader => "unsupported_header",
            Self::MissingClaim => "missing_claim",
            Self::InvalidClaim => "invalid_claim",
        }
    }
}

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
    // Step 1: size and shape.
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(Failure::Malformed);
    }
    let mut parts = token.splitn(4, '.');
    let (Some(h64), Some(p64), Some(s64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::Malformed);
    };
    let header: StrictObject = strict_object(&b64url_decode(h64).ok_or(Failure::Malformed)?)?;
    let payload = b64url_decode(p64).ok_or(Failure::Malformed)?;
    if payload.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(Failure::Malformed);
    }

    // Step 2: header. `alg` first, so `none` and HS256 never reach a key.
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

    // The signature's shape is checked after `alg`, so an unsigned
    // `alg: none` token is reported as what it is.
    if s64.is_empty()
        || !s64
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Failure::Malformed);
    }

    // Step 3: signature over the exact bytes received.
    let signing_input = &token.as_bytes()[..h64.len() + 1 + p64.len()];
    if !key.verify(signing_input, s64) {
        return Err(Failure::BadSignature);
    }

    // Typed only once signed: an unsigned payload's types are no one's
    // business, and the answer must not depend on which check ran first.
    let claims = parse::claims(&payload)?;
    let kind = header
        .get("typ")
        .and_then(Value::as_str)
        .and_then(TokenKind::from_typ);
    Ok(Signed {
        claims,
        kid: kid.to_owned(),
        kind,
    })
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

/// [`verify`] with steps 1–3 through the ring's verified-signature cache;
/// steps 4 and 5 run on every call.
pub fn verify_cached(
    token: &str,
    ring: &KeyRing,
    policy: &Policy,
    expect: &Expectation<'_>,
    revocations: &MemoryRevocations,
    now: UnixTime,
) -> Result<Arc<Signed>, Failure> {
    let signed = ring.verify_signature(token, policy, now)?;
    check_after_signature(&signed, expect, policy, revocations, now)?;
    Ok(signed)
}

/// Steps 1–4 locally (through the ring's cache), step 5 against the durable
/// store: `consistency = STRONG`, for a caller that needs read-your-writes.
/// The outer error is the store's; the inner one is the token's failure.
pub async fn verify_strong(
    token: &str,
    ring: &KeyRing,
    policy: &Policy,
    expect: &Expectation<'_>,
    store: &dyn RevocationStore,
    now: UnixTime,
) -> crate::error::Result<Result<Arc<Signed>, Failure>> {
    let signed = match ring
        .verify_signature(token, policy, now)
        .and_then(|s| check_claims(&s, expect, policy, now).map(|()| s))
    {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    if store.is_revoked(&signed.revocation_query(), now).await? {
        return Ok(Err(Failure::Revoked));
    }
    Ok(Ok(signed))
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

/// Serialises and signs a token: `b64(header).b64(claims).b64(sig)`.
/// The header is the key's pre-encoded one; everything is written into one
/// buffer (this is the whole cost on top of the signature: see BENCHMARKS.md).
pub fn sign(
    key: &crate::keys::SigningKey,
    kind: TokenKind,
    claims: &Claims,
) -> crate::error::Result<String> {
    let payload = serde_json::to_vec(claims)
        .map_err(|_| crate::error::DomainError::Internal("claims did not serialise".into()))?;
    let header = key.encoded_header(kind);
    // 4/3 of the payload, plus the header, plus an 86-character signature.
    let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 96);
    token.push_str(header);
    token.push('.');
    crate::b64url_encode_into(&payload, &mut token);
    let sig = key.sign_raw(token.as_bytes())?;
    token.push('.');
    crate::b64url_encode_into(sig, &mut token);
    Ok(token)
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
