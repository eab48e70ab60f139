//! Minting: turning an Issue command into claims, a family and a signed pair.

use crate::claims::{Audience, Claims, REGISTERED_CLAIMS};
use crate::clock::UnixTime;
use crate::error::{DomainError, Result};
use crate::keys::SigningKey;
use crate::kind::TokenKind;
use crate::policy::Policy;
use crate::store::NewFamily;
use crate::{b64url_encode, random_bytes, random_id, sha256};
use serde_json::{Map, Value};

/// Refresh-token family lifetimes (RFC 9700 section 4.14.2: bound refresh
/// tokens in time).
#[derive(Debug, Clone, Copy)]
pub struct FamilyPolicy {
    /// A family unused this long ends (default 14 days).
    pub idle_timeout: i64,
    /// A family ends this long after login whatever happens (default 30 days).
    pub absolute_lifetime: i64,
}

impl Default for FamilyPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: 14 * 24 * 3600,
            absolute_lifetime: 30 * 24 * 3600,
        }
    }
}

/// A validated Issue request.
#[derive(Debug, Clone)]
pub struct IssueCommand {
    /// `sub`.
    pub subject: String,
    /// `aud`.
    pub audience: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Caller claims (already checked against the allowlist).
    pub extra_claims: Map<String, Value>,
    /// Requested lifetime in seconds; `None` for the default.
    pub access_ttl: Option<i64>,
    /// OAuth client id.
    pub client_id: Option<String>,
}

/// Checks a text field: required, at most `max` bytes, no control characters.
pub fn check_text(field: &'static str, value: &str, max: usize) -> Result<()> {
    if value.is_empty() {
        return Err(DomainError::field(field, "is required"));
    }
    if value.len() > max {
        return Err(DomainError::field(field, format!("at most {max} bytes")));
    }
    if value.chars().any(char::is_control) {
        return Err(DomainError::field(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

impl IssueCommand {
    /// Validates every field against the policy.
    pub fn validate(&self, policy: &Policy) -> Result<()> {
        check_text("subject", &self.subject, 255)?;
        check_text("audience", &self.audience, 255)?;
        if self.scopes.len() > 64 {
            return Err(DomainError::field("scopes", "at most 64 scopes"));
        }
        for s in &self.scopes {
            // RFC 6749 3.3 scope-token: %x21 / %x23-5B / %x5D-7E.
            let ok = !s.is_empty()
                && s.len() <= 128
                && s.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !ok {
                return Err(DomainError::field(
                    "scopes",
                    "each scope is 1 to 128 printable ASCII characters without space, quote or backslash",
                ));
            }
        }
        if let Some(c) = &self.client_id {
            check_text("client_id", c, 255)?;
        }
        for name in self.extra_claims.keys() {
            if REGISTERED_CLAIMS.contains(&name.as_str()) {
                return Err(DomainError::field(
                    "extra_claims",
                    format!("`{name}` is a registered claim and set by Tessera"),
                ));
            }
            if !policy.extra_claims_allowlist.iter().any(|a| a == name) {
                return Err(DomainError::field(
                    "extra_claims",
                    format!("`{name}` is not on the extra-claims allowlist"),
                ));
            }
        }
        let size = serde_json::to_vec(&self.extra_claims).map_or(usize::MAX, |v| v.len());
        if size > 4096 {
            return Err(DomainError::field("extra_claims", "at most 4 KiB as JSON"));
        }
        policy.access_ttl(self.access_ttl)?;
        Ok(())
    }
}

/// A freshly minted login: the pair and the family to store before returning.
#[derive(Debug)]
pub struct Minted {
    /// The signed access token.
    pub access_token: String,
    /// Its claims.
    pub claims: Claims,
    /// The raw refresh token (returned once, never stored).
    pub refresh_token: RefreshToken,
    /// The family to persist (holds only the refresh token's hash).
    pub family: NewFamily,
}

/// A raw refresh token: 256 random bits, base64url. `Debug` is redacted.
pub struct RefreshToken(String);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

impl RefreshToken {
    /// A new random refresh token.
    pub fn generate() -> Self {
        Self(b64url_encode(random_bytes(32)))
    }

    /// The value to hand to the caller, once.
    pub fn reveal(self) -> String {
        self.0
    }

    /// The SHA-256 that is stored instead of the token.
    pub fn hash(&self) -> [u8; 32] {
        sha256(self.0.as_bytes())
    }
}

/// Mints a new login: claims for a new family, signed with `key`.
pub fn mint_login(
    cmd: &IssueCommand,
    policy: &Policy,
    families: &FamilyPolicy,
    key: &SigningKey,
    subject_version: u64,
    now: UnixTime,
) -> Result<Minted> {
    cmd.validate(policy)?;
    let ttl = policy.access_ttl(cmd.access_ttl)?;
    let family_id = random_id();
    let claims = Claims {
        iss: policy.issuer.clone(),
        sub: cmd.subject.clone(),
        aud: Audience::One(cmd.audience.clone()),
        exp: now + ttl,
        nbf: now,
        iat: now,
        jti: random_id(),
        sid: Some(family_id.clone()),
        ver: subject_version,
        scope: (!cmd.scopes.is_empty()).then(|| cmd.scopes.join(" ")),
        client_id: cmd.client_id.clone(),
        extra: cmd.extra_claims.clone(),
    };
    let access_token = crate::verify::sign(key, TokenKind::Access, &claims)?;
    let refresh_token = RefreshToken::generate();
    let absolute = now + families.absolute_lifetime;
    let family = NewFamily {
        family_id,
        subject: cmd.subject.clone(),
        audience: cmd.audience.clone(),
        scope: cmd.scopes.join(" "),
        client_id: cmd.client_id.clone().unwrap_or_default(),
        refresh_token_hash: refresh_token.hash(),
        created_at: now,
        idle_expires_at: (now + families.idle_timeout).min(absolute),
        absolute_expires_at: absolute,
    };
    Ok(Minted {
        access_token,
        claims,
        refresh_token,
        family,
    })
}
