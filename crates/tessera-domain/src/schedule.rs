//! The key-rotation schedule: when a key is published, signs, stops signing
//! and disappears. Pure functions of the key set and `now`.
//!
//! The two safety rules (`docs/architecture.md`, "Keys"):
//! - a key is published at least one JWKS cache lifetime (plus a margin)
//!   before it signs, so no verifier meets a token whose key it cannot have
//!   fetched yet;
//! - a key that stopped signing stays published until the longest-lived
//!   token it signed has expired, plus clock skew.
//!
//! [`KeySchedule::validate`] refuses a configuration that breaks either.

use crate::clock::UnixTime;
use crate::error::{DomainError, Result};
use crate::keys::{Algorithm, KeyState};

/// Slack added to the JWKS cache lifetime (clock differences, the time a
/// verifier takes to refetch) and to the retire time (other instances
/// applying the schedule a tick later).
pub const PUBLISH_MARGIN: i64 = 60;

/// The rotation schedule.
#[derive(Debug, Clone, Copy)]
pub struct KeySchedule {
    /// Algorithm of new keys.
    pub algorithm: Algorithm,
    /// How long a key signs before the next one takes over (default 30 days).
    pub rotation_period: i64,
    /// How long a new key is published before it signs (default 1 hour).
    pub publish_ahead: i64,
    /// How long a key stays published after it stopped signing (default 25
    /// hours: the longest token, a 24-hour email verification, plus skew).
    pub retire_after: i64,
    /// How long verifiers may cache the JWKS (default 300 s).
    pub jwks_max_age: i64,
}

impl Default for KeySchedule {
    fn default() -> Self {
        Self {
            algorithm: Algorithm::Es256,
            rotation_period: 30 * 24 * 3600,
            publish_ahead: 3600,
            retire_after: 25 * 3600,
            jwks_max_age: 300,
        }
    }
}

impl KeySchedule {
    /// Refuses an unsafe schedule; the error names the setting to change.
    /// `longest_token` is the longest lifetime of any token a key signs,
    /// `clock_skew` the tolerated skew.
    pub fn validate(&self, longest_token: i64, clock_skew: i64) -> Result<()> {
        if self.jwks_max_age < 0 || self.jwks_max_age > 24 * 3600 {
            return Err(DomainError::field(
                "jwks_max_age",
                "must be between 0 and 86400 seconds",
            ));
        }
        let need = self.jwks_max_age + PUBLISH_MARGIN;
        if self.publish_ahead < need {
            return Err(DomainError::field(
                "key_publish_ahead",
                format!(
                    "a key must be published at least the JWKS cache lifetime plus {PUBLISH_MARGIN} s ({need} s) before it signs"
                ),
            ));
        }
        // The margin also covers other instances still signing with the key
        // until their next schedule tick.
        let need = longest_token + clock_skew + PUBLISH_MARGIN;
        if self.retire_after < need {
            return Err(DomainError::field(
                "key_retire_after",
                format!(
                    "a key must stay published for the longest token it signed plus the clock skew plus {PUBLISH_MARGIN} s ({need} s)"
                ),
            ));
        }
        if self.rotation_period <= self.publish_ahead {
            return Err(DomainError::field(
                "key_rotation_period",
                "must be longer than the publish-ahead time",
            ));
        }
        Ok(())
    }
}

/// What the schedule needs to know of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTimes {
    /// Key id.
    pub kid: String,
    /// State.
    pub state: KeyState,
    /// Published (created) at.
    pub created_at: UnixTime,
    /// For a pending key: when it is due to sign.
    pub activates_at: Option<UnixTime>,
    /// When it started signing.
    pub activated_at: Option<UnixTime>,
    /// When it stopped signing.
    pub retiring_at: Option<UnixTime>,
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyStep {
    /// No key signs and none is ready: create one that signs at once (first
    /// start, or after the active key was compromised).
    CreateActive,
    /// Publish a new key that will sign at `activates_at`.
    CreatePending {
        /// When it will sign.
        activates_at: UnixTime,
    },
    /// The pending key starts signing; the active one (if any) retires.
    Activate {
        /// The pending key.
        kid: String,
        /// The key that stops signing.
        previous: Option<String>,
    },
    /// A retiring key is unpublished.
    Retire {
        /// The key.
        kid: String,
    },
}

/// The steps due at `now`, in the order to apply them.
///
/// A *standby* key is always published behind the signing one: whenever a
/// key starts signing (first start, a scheduled hand-over, a kill), the
/// next one is published in the same step, due a rotation period later.
/// So a key is published for a whole period before it signs on schedule
/// (never less than `publish_ahead`), and when the signing key is killed
/// its replacement is one every verifier already holds: no fresh token
/// fails anywhere, whether or not the kill's notification reaches it.
pub fn due_steps(keys: &[KeyTimes], s: &KeySchedule, now: UnixTime) -> Vec<KeyStep> {
    let mut steps = Vec::new();
    let active = keys.iter().find(|k| k.state == KeyState::Active);
    let pending = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending)
        .min_by_key(|k| k.activates_at.unwrap_or(UnixTime::MAX));
    let standby = KeyStep::CreatePending {
        activates_at: now + s.rotation_period,
    };
    match (active, pending) {
        (None, Some(p)) => steps.extend([
            KeyStep::Activate {
                kid: p.kid.clone(),
                previous: None,
            },
            standby,
        ]),
        (None, None) => steps.extend([KeyStep::CreateActive, standby]),
        (Some(a), None) => {
            // No standby (a deployment from before standbys, or the
            // standby was killed): publish one now.
            let hand_over = a.activated_at.unwrap_or(a.created_at) + s.rotation_period;
            steps.push(KeyStep::CreatePending {
                activates_at: hand_over.max(now + s.publish_ahead),
            });
        }
        (Some(a), Some(p)) => {
            // Never earlier than publish_ahead after publication.
            let due = p
                .activates_at
                .unwrap_or(UnixTime::MAX)
                .max(p.created_at + s.publish_ahead);
            if now >= due {
                steps.extend([
                    KeyStep::Activate {
                        kid: p.kid.clone(),
                        previous: Some(a.kid.clone()),
                    },
                    standby,
                ]);
            }
        }
    }
    for k in keys.iter().filter(|k| k.state == KeyState::Retiring) {
        if now >= k.retiring_at.unwrap_or(k.created_at) + s.retire_after {
            steps.push(KeyStep::Retire { kid: k.kid.clone() });
        }
    }
    steps
}

/// When the key that signs now started signing (`None`: no key signs).
pub fn active_since(keys: &[KeyTimes]) -> Option<UnixTime> {
    keys.iter()
        .find(|k| k.state == KeyState::Active)
        .map(|k| k.activated_at.unwrap_or(k.created_at))
}

/// When the next key will take over signing, as [`due_steps`] will decide
/// it: the pending key's time (never earlier than `publish_ahead` after its
/// publication), or, with none published yet, the active key's end of
/// period. `None` when no key signs.
pub fn next_rotation(keys: &[KeyTimes], s: &KeySchedule) -> Option<UnixTime> {
    let pending = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending)
        .filter_map(|k| Some(k.activates_at?.max(k.created_at + s.publish_ahead)))
        .min();
    pending.or_else(|| active_since(keys).map(|since| since + s.rotation_period))
}

/// What an on-demand rotation should do: publish a next key due as soon as
/// safe, or bring the existing pending key forward to that moment.
pub fn rotate_now(keys: &[KeyTimes], s: &KeySchedule, now: UnixTime) -> KeyStep {
    let pending = keys
        .iter()
        .filter(|k| k.state == KeyState::Pending)
        .min_by_key(|k| k.activates_at.unwrap_or(UnixTime::MAX));
    match pending {
        Some(p) => KeyStep::Activate {
            kid: p.kid.clone(),
            previous: keys
                .iter()
                .find(|k| k.state == KeyState::Active)
                .map(|k| k.kid.clone()),
        },
        None if keys.iter().any(|k| k.state == KeyState::Active) => KeyStep::CreatePending {
            activates_at: now + s.publish_ahead,
        },
        None => KeyStep::CreateActive,
    }
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
