//! Refresh-token families (RFC 9700 section 4.14): rotation, the idempotent
//! grace window, and reuse detection.
//!
//! Successors are *derived*, not drawn: the successor of refresh token `t` is
//! `HMAC-SHA256(secret, t)`. So a retry (or a second tab) that presents the
//! immediate predecessor within the grace window gets the very same successor
//! back, while the store still holds only SHA-256 hashes and no raw token. An
//! attacker without `t` cannot compute the successor; one with `t` is the
//! holder RFC 9700's grace window already trusts.

use crate::clock::UnixTime;
use crate::error::{DomainError, Result};
use crate::{Secret, b64url_encode, random_bytes, sha256};
use aws_lc_rs::hmac;

/// The longest grace window, seconds: a replay window, not a second life
/// for a stolen token.
pub const MAX_GRACE: i64 = 60;

/// Refresh-token family lifetimes and the grace window.
#[derive(Debug, Clone, Copy)]
pub struct FamilyPolicy {
    /// A family unused this long ends (default 14 days; 1 minute to 90 days).
    pub idle_timeout: i64,
    /// A family ends this long after login whatever happens (default 30
    /// days; 1 hour to 365 days, and at least the idle timeout).
    pub absolute_lifetime: i64,
    /// How long after a rotation the immediate predecessor still yields the
    /// same successor (default 30 s; 0 disables; at most 60 s).
    pub grace: i64,
}

impl Default for FamilyPolicy {
    fn default() -> Self {
        Self {
            idle_timeout: 14 * 24 * 3600,
            absolute_lifetime: 30 * 24 * 3600,
            grace: 30,
        }
    }
}

impl FamilyPolicy {
    /// Checks the bounds; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        if !(60..=90 * 24 * 3600).contains(&self.idle_timeout) {
            return Err(DomainError::field(
                "family_idle_timeout",
                "must be between 60 seconds and 90 days",
            ));
        }
        if !(3600..=365 * 24 * 3600).contains(&self.absolute_lifetime)
            || self.absolute_lifetime < self.idle_timeout
        {
            return Err(DomainError::field(
                "family_lifetime",
                "must be between 1 hour and 365 days and at least the idle timeout",
            ));
        }
        if !(0..=MAX_GRACE).contains(&self.grace) {
            return Err(DomainError::field(
                "refresh_grace",
                "must be between 0 and 60 seconds",
            ));
        }
        Ok(())
    }
}

/// A raw refresh token: 256 bits, base64url. `Debug` is redacted.
pub struct RefreshToken(String);

impl std::fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

impl RefreshToken {
    /// A new random refresh token (the first of a family).
    pub fn generate() -> Self {
        Self(b64url_encode(random_bytes(32)))
    }

    /// A token presented by a caller. Shape only: 43 base64url characters.
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 43
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(text.to_owned()))
    }

    /// The value to hand to the caller, once.
    pub fn reveal(self) -> String {
        self.0
    }

    /// The SHA-256 that is stored instead of the token.
    pub fn hash(&self) -> [u8; 32] {
        sha256(self.0.as_bytes())
    }

    /// The successor this token rotates to (see the module docs).
    pub fn successor(&self, secret: &RefreshSecret) -> Self {
        Self(b64url_encode(hmac::sign(&secret.0, self.0.as_bytes())))
    }
}

/// The HMAC key that derives successors: 32 random bytes stored sealed
/// beside the signing keys, the same for every instance of a deployment and
/// unchanged by a KEK rewrap.
pub struct RefreshSecret(hmac::Key);

impl std::fmt::Debug for RefreshSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RefreshSecret([redacted])")
    }
}

impl RefreshSecret {
    /// The key for `secret` bytes.
    pub fn new(secret: &Secret) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret.expose()))
    }
}

/// A family as stored.
#[derive(Debug, Clone)]
pub struct FamilyRecord {
    /// Family id (`sid`).
    pub family_id: String,
    /// Subject.
    pub subject: String,
    /// Audience of its access tokens.
    pub audience: String,
    /// Scopes, space-joined.
    pub scope: String,
    /// OAuth client id, empty when none.
    pub client_id: String,
    /// When the refresh token now current stops working if unused.
    pub idle_expires_at: UnixTime,
    /// When the family ends at the latest.
    pub absolute_expires_at: UnixTime,
    /// The subject's version (equal to the family's; a family behind its
    /// subject is revoked).
    pub subject_version: u64,
    /// The extra claims given at Issue (empty for a family stored before
    /// they were kept, or opened without any).
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
    /// The caller that obtained it; `None`: bound to no caller (opened
    /// without a callers file, or before owners were recorded).
    pub owner: Option<String>,
}

impl FamilyRecord {
    /// The family's extra claims that may still be minted: those whose names
    /// are on the allowlist now (an operator who drops a name from
    /// `--extra-claims` stops it at the next refresh) and never a registered
    /// claim, whatever a stored row says.
    pub fn carried_claims(
        &self,
        allowlist: &[String],
    ) -> serde_json::Map<String, serde_json::Value> {
        self.extra_claims
            .iter()
            .filter(|(name, _)| {
                allowlist.iter().any(|a| a == *name)
                    && !crate::claims::REGISTERED_CLAIMS.contains(&name.as_str())
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// What the store did with a presented refresh token.
#[derive(Debug, Clone)]
pub enum RotateOutcome {
    /// Rotated (or, inside the grace window, the same rotation replayed):
    /// the successor is current.
    Rotated {
        /// The family after the rotation.
        family: FamilyRecord,
        /// False when this was a grace-window replay.
        fresh: bool,
    },
    /// No such refresh token.
    Unknown,
    /// The family was revoked earlier.
    Revoked,
    /// The family passed its idle timeout.
    IdleExpired,
    /// The family passed its absolute lifetime.
    LifetimeExpired,
    /// A requested scope is not among the family's scopes (nothing rotated).
    ScopeNotGranted,
    /// The presenting caller may no longer issue for the family's audience
    /// (nothing consumed).
    AudienceNotAllowed {
        /// The family, untouched.
        family: FamilyRecord,
    },
    /// Presented by a caller other than the one that obtained it: refused,
    /// nothing consumed, not judged as reuse.
    OtherCaller {
        /// The family, untouched (its `owner` names who obtained it).
        family: FamilyRecord,
    },
    /// A consumed token was presented outside the grace window: the family
    /// is now revoked.
    Reused {
        /// The family revoked.
        family: FamilyRecord,
    },
}

/// What a refresh decision needs besides the snapshot. (The presented
/// token's hash is what the store loads the snapshot by; see
/// [`crate::store::SessionStore::rotate`].)
#[derive(Debug, Clone, Copy)]
pub struct RotateRequest {
    /// SHA-256 of the presented token's derived successor.
    pub successor: [u8; 32],
    /// The family rules.
    pub policy: FamilyPolicy,
    /// Now.
    pub now: UnixTime,
}

/// The presented refresh token as stored.
#[derive(Debug, Clone)]
pub struct PresentedToken {
    /// Its position in the family (0 for the first).
    pub generation: i64,
    /// When it was rotated away; `None` while it is the current token.
    pub consumed_at: Option<UnixTime>,
    /// SHA-256 of the token it rotated to.
    pub successor_hash: Option<[u8; 32]>,
    /// True when that successor is stored and not yet consumed: the
    /// presented token is the immediate predecessor of the current one.
    pub successor_current: bool,
}

/// Everything a refresh decision reads, loaded under the family's lock.
#[derive(Debug, Clone)]
pub struct FamilySnapshot {
    /// The family.
    pub family: FamilyRecord,
    /// True once the family was revoked (logout, subject revocation, reuse).
    pub revoked: bool,
    /// The subject's version now (a family behind it was revoked with it).
    pub current_subject_version: u64,
    /// The token presented.
    pub presented: PresentedToken,
}

/// What to do with a presented refresh token: everything the store writes,
/// so it applies the plan in the transaction that holds the family's lock
/// and decides nothing itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write nothing; answer this outcome.
    Refuse(RefusedBecause),
    /// Consume the presented token at `at`, store `successor` as
    /// `generation` (created at `at`), and mark the family used at `at` with
    /// the idle deadline `idle_expires_at`.
    Rotate {
        /// SHA-256 of the successor to store.
        successor: [u8; 32],
        /// The successor's generation.
        generation: i64,
        /// When the rotation happens.
        at: UnixTime,
        /// The family's new idle deadline.
        idle_expires_at: UnixTime,
    },
    /// A grace-window replay: write nothing; the successor stays current.
    Replay,
    /// Reuse of a consumed token: revoke the whole family at `at` and log
    /// the revocation, so verifiers learn of it from the store even if the
    /// issuer's notification never arrives.
    RevokeFamily {
        /// When the family is revoked.
        at: UnixTime,
    },
}

/// Why a refresh is refused without writing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBecause {
    /// The family was revoked, or its subject's version moved past it.
    Revoked,
    /// Past the family's absolute lifetime.
    LifetimeExpired,
    /// Unused for longer than the idle timeout.
    IdleExpired,
    /// A requested scope is not among the family's scopes.
    ScopeNotGranted,
    /// The token was obtained by another caller (nothing consumed, not
    /// reuse).
    OtherCaller,
    /// The presenting caller may no longer issue for the family's audience
    /// (its rights changed since the login).
    AudienceNotAllowed,
}

/// Decides a refresh (RFC 9700 section 4.14.2), failing closed, in order:
/// another caller's token (RFC 6749 section 6: a refresh token is bound to
/// the client it was issued to; refused before anything else, so it
/// neither consumes the token nor counts as reuse) → revoked (including a family opened under an older subject version, even
/// if its row was written after that revocation) → lifetime → idle →
/// reuse (judged before the scopes, so a stolen, consumed token cannot probe
/// without revoking its family) → scopes → rotate or replay. Only the
/// immediate predecessor of the current token, presented within the grace
/// window, replays its rotation; any other consumed token is reuse.
///
/// `caller`: the presenting caller's id (`None` without a callers file).
/// A family bound to no caller may be refreshed by any.
pub fn decide(
    s: &FamilySnapshot,
    req: &RotateRequest,
    scopes: &[String],
    caller: Option<&str>,
) -> Decision {
    let (f, now) = (&s.family, req.now);
    if f.owner
        .as_deref()
        .is_some_and(|owner| Some(owner) != caller)
    {
        return Decision::Refuse(RefusedBecause::OtherCaller);
    }
    if s.revoked || s.current_subject_version > f.subject_version {
        return Decision::Refuse(RefusedBecause::Revoked);
    }
    if now >= f.absolute_expires_at {
        return Decision::Refuse(RefusedBecause::LifetimeExpired);
    }
    if now >= f.idle_expires_at {
        return Decision::Refuse(RefusedBecause::IdleExpired);
    }
    let granted = scopes.iter().all(|s| f.scope.split(' ').any(|g| g == s));
    let Some(consumed_at) = s.presented.consumed_at else {
        if !granted {
            return Decision::Refuse(RefusedBecause::ScopeNotGranted);
        }
        return Decision::Rotate {
            successor: req.successor,
            generation: s.presented.generation + 1,
            at: now,
            idle_expires_at: (now + req.policy.idle_timeout).min(f.absolute_expires_at),
        };
    };
    let replay = s.presented.successor_current
        && s.presented.successor_hash == Some(req.successor)
        && req.policy.grace > 0
        && now - consumed_at <= req.policy.grace;
    match (replay, granted) {
        // Reuse (RFC 9700 section 4.14.2): the whole family goes.
        (false, _) => Decision::RevokeFamily { at: now },
        (true, false) => Decision::Refuse(RefusedBecause::ScopeNotGranted),
        (true, true) => Decision::Replay,
    }
}

impl Decision {
    /// The outcome reported once the decision is applied to `family`.
    pub fn outcome(&self, mut family: FamilyRecord) -> RotateOutcome {
        match *self {
            Self::Refuse(RefusedBecause::Revoked) => RotateOutcome::Revoked,
            Self::Refuse(RefusedBecause::LifetimeExpired) => RotateOutcome::LifetimeExpired,
            Self::Refuse(RefusedBecause::IdleExpired) => RotateOutcome::IdleExpired,
            Self::Refuse(RefusedBecause::ScopeNotGranted) => RotateOutcome::ScopeNotGranted,
            Self::Refuse(RefusedBecause::OtherCaller) => RotateOutcome::OtherCaller { family },
            Self::Refuse(RefusedBecause::AudienceNotAllowed) => {
                RotateOutcome::AudienceNotAllowed { family }
            }
            Self::Rotate {
                idle_expires_at, ..
            } => {
                family.idle_expires_at = idle_expires_at;
                RotateOutcome::Rotated {
                    family,
                    fresh: true,
                }
            }
            Self::Replay => RotateOutcome::Rotated {
                family,
                fresh: false,
            },
            Self::RevokeFamily { .. } => RotateOutcome::Reused { family },
        }
    }
}

#[cfg(test)]
#[path = "refresh_tests.rs"]
mod tests;
