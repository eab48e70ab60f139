//! Purpose tokens: single-use JWTs for one purpose (email verification,
//! password reset). Each purpose has its own `typ` and audience, so a purpose
//! token is never an access token and the other way round.

use crate::callers::Caller;
use crate::claims::{Audience, Claims};
use crate::clock::UnixTime;
use crate::error::{DomainError, Result};
use crate::keys::{SigningKey, sign};
use crate::kind::TokenKind;
use crate::policy::Policy;
use crate::text::check_text;
use crate::{random_id, sha256};

/// The `aud` of a purpose token: Tessera itself, per purpose.
pub fn purpose_audience(kind: TokenKind) -> Option<&'static str> {
    match kind {
        TokenKind::EmailVerification => Some("urn:tessera:email-verification"),
        TokenKind::PasswordReset => Some("urn:tessera:password-reset"),
        TokenKind::Access => None,
    }
}

/// The default (and longest) lifetime of a purpose token, seconds.
pub fn purpose_ttl(kind: TokenKind) -> Option<i64> {
    match kind {
        TokenKind::EmailVerification => Some(24 * 3600),
        TokenKind::PasswordReset => Some(3600),
        TokenKind::Access => None,
    }
}

/// The stored form of a binding value: its SHA-256. (The binding is usually
/// an email address: it is never put in the token, and the store keeps only
/// the hash, which is compared on redeem.)
pub fn binding_hash(binding: &str) -> Option<[u8; 32]> {
    (!binding.is_empty()).then(|| sha256(binding.as_bytes()))
}

/// A validated IssuePurposeToken request.
#[derive(Debug, Clone)]
pub struct PurposeCommand {
    /// The subject.
    pub subject: String,
    /// EmailVerification or PasswordReset.
    pub kind: TokenKind,
    /// The value the token is bound to; empty for none.
    pub binding: String,
    /// Requested lifetime; `None` for the purpose's default.
    pub ttl: Option<i64>,
}

/// A minted purpose token and what to store about it.
#[derive(Debug)]
pub struct MintedPurpose {
    /// The signed token.
    pub token: String,
    /// Its claims.
    pub claims: Claims,
    /// The binding's hash, if bound.
    pub binding_hash: Option<[u8; 32]>,
}

/// Mints a purpose token.
pub fn mint_purpose(
    cmd: &PurposeCommand,
    policy: &Policy,
    key: &SigningKey,
    subject_version: u64,
    now: UnixTime,
) -> Result<MintedPurpose> {
    check_text("subject", &cmd.subject, 255)?;
    let (Some(aud), Some(max_ttl)) = (purpose_audience(cmd.kind), purpose_ttl(cmd.kind)) else {
        return Err(DomainError::field(
            "kind",
            "must be TOKEN_KIND_EMAIL_VERIFICATION or TOKEN_KIND_PASSWORD_RESET",
        ));
    };
    if cmd.binding.len() > 1024 {
        return Err(DomainError::field("binding", "at most 1024 bytes"));
    }
    let ttl = match cmd.ttl {
        None => max_ttl,
        Some(t) if (1..=max_ttl).contains(&t) => t,
        Some(_) => {
            return Err(DomainError::field(
                "ttl",
                format!("must be between 1 and {max_ttl} seconds for this purpose"),
            ));
        }
    };
    let claims = Claims {
        iss: policy.issuer.clone(),
        sub: cmd.subject.clone(),
        aud: Audience::One(aud.to_owned()),
        exp: now + ttl,
        nbf: now,
        iat: now,
        jti: random_id(),
        sid: None,
        ver: subject_version,
        scope: None,
        client_id: None,
        extra: Default::default(),
    };
    let token = sign(key, cmd.kind, &claims)?;
    Ok(MintedPurpose {
        token,
        claims,
        binding_hash: binding_hash(&cmd.binding),
    })
}

/// A purpose token as stored: what a redemption decision reads, loaded under
/// the token's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeRecord {
    /// The stored SHA-256 of the binding; `None` for an unbound token. Kept
    /// as stored: a value of any other length matches no binding.
    pub binding_hash: Option<Vec<u8>>,
    /// When it was redeemed; `None` while it is unused.
    pub redeemed_at: Option<UnixTime>,
    /// The caller that issued it; `None`: bound to no caller.
    pub owner: Option<String>,
}

/// What to do with a purpose token presented for redemption. The store
/// applies it in the transaction that holds the token's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemDecision {
    /// Mark the token redeemed at `at`.
    Consume {
        /// When it is redeemed.
        at: UnixTime,
    },
    /// Write nothing; answer this.
    Refuse(RedeemRefused),
}

/// Why a redemption is refused without writing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemRefused {
    /// The binding value presented is not the one the token was bound to.
    BindingMismatch,
    /// Redeemed before.
    AlreadyUsed,
    /// Issued to another caller (nothing consumed).
    OtherCaller,
}

/// Decides a redemption: the binding first (so a caller without the right
/// binding value learns nothing, not even whether the token was used), then
/// single use, then consume at `now`.
pub fn decide_redeem(
    stored: &PurposeRecord,
    binding_hash: Option<[u8; 32]>,
    now: UnixTime,
) -> RedeemDecision {
    if stored.binding_hash.as_deref() != binding_hash.as_ref().map(<[u8; 32]>::as_slice) {
        return RedeemDecision::Refuse(RedeemRefused::BindingMismatch);
    }
    if stored.redeemed_at.is_some() {
        return RedeemDecision::Refuse(RedeemRefused::AlreadyUsed);
    }
    RedeemDecision::Consume { at: now }
}

/// [`decide_redeem`] for `caller` (`None` without a callers file)
/// redeeming a token of `kind`: a token issued to another caller, unless
/// the callers file grants this one that caller's tokens of this kind
/// (`redeem_from`), is refused first, so another caller can neither redeem
/// it nor learn whether it was used.
pub fn decide_redeem_as(
    stored: &PurposeRecord,
    binding_hash: Option<[u8; 32]>,
    now: UnixTime,
    caller: Option<&Caller>,
    kind: TokenKind,
) -> RedeemDecision {
    let refused = stored
        .owner
        .as_deref()
        .is_some_and(|o| !caller.is_some_and(|c| c.may_redeem(o, kind)));
    if refused {
        return RedeemDecision::Refuse(RedeemRefused::OtherCaller);
    }
    decide_redeem(stored, binding_hash, now)
}

impl RedeemDecision {
    /// The outcome reported once the decision is applied.
    pub fn outcome(&self) -> RedeemOutcome {
        match self {
            Self::Consume { .. } => RedeemOutcome::Redeemed,
            Self::Refuse(RedeemRefused::BindingMismatch) => RedeemOutcome::BindingMismatch,
            Self::Refuse(RedeemRefused::AlreadyUsed) => RedeemOutcome::AlreadyUsed,
            Self::Refuse(RedeemRefused::OtherCaller) => RedeemOutcome::OtherCaller,
        }
    }
}

/// What the store answered to a redeem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedeemOutcome {
    /// Redeemed now, for the first and only time.
    Redeemed,
    /// Redeemed before.
    AlreadyUsed,
    /// The binding value does not match.
    BindingMismatch,
    /// The store does not know the token.
    Unknown,
    /// Issued to another caller: refused, nothing consumed.
    OtherCaller,
}

#[cfg(test)]
#[path = "purpose_tests.rs"]
mod tests;
