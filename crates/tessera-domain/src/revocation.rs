//! The in-memory revocation view that Verify step 5 reads with no network hop,
//! and the events that keep every instance's view current.

use crate::clock::UnixTime;
use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

/// What step 5 asks about a token.
#[derive(Debug, Clone, Copy)]
pub struct RevocationQuery<'a> {
    /// `jti`.
    pub jti: &'a str,
    /// `sid`, when the token belongs to a family.
    pub family_id: Option<&'a str>,
    /// `sub`.
    pub subject: &'a str,
    /// `ver`.
    pub subject_version: u64,
    /// The signing key's id.
    pub kid: &'a str,
}

/// One revocation, as stored and as sent between instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RevocationEvent {
    /// A token id is denied until `until` (its `exp` plus skew).
    Jti {
        /// The token id.
        jti: String,
        /// When the entry may be forgotten.
        until: UnixTime,
    },
    /// A refresh-token family is revoked until `until` (its absolute end).
    Family {
        /// The family id (`sid`).
        family_id: String,
        /// When the entry may be forgotten.
        until: UnixTime,
    },
    /// Tokens of `subject` with `ver < min_version` are revoked.
    Subject {
        /// The subject.
        subject: String,
        /// The lowest version still valid.
        min_version: u64,
    },
    /// Every token signed by `kid` is revoked.
    Key {
        /// The key id.
        kid: String,
    },
}

#[derive(Debug, Default)]
struct Inner {
    jtis: HashMap<String, UnixTime>,
    families: HashMap<String, UnixTime>,
    subjects: HashMap<String, u64>,
    keys: HashSet<String>,
}

/// The local revocation view. Reads take a shared lock held for a few hash
/// lookups; writers (revocations, purges) hold it just as briefly.
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    inner: RwLock<Inner>,
}

impl MemoryRevocations {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one event. Idempotent; a later `until` wins.
    pub fn apply(&self, event: &RevocationEvent) {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            RevocationEvent::Jti { jti, until } => {
                let e = g.jtis.entry(jti.clone()).or_insert(*until);
                *e = (*e).max(*until);
            }
            RevocationEvent::Family { family_id, until } => {
                let e = g.families.entry(family_id.clone()).or_insert(*until);
                *e = (*e).max(*until);
            }
            RevocationEvent::Subject {
                subject,
                min_version,
            } => {
                let e = g.subjects.entry(subject.clone()).or_insert(*min_version);
                *e = (*e).max(*min_version);
            }
            RevocationEvent::Key { kid } => {
                g.keys.insert(kid.clone());
            }
        }
    }

    /// True when any part of `q` is revoked. Entries past `until` no longer
    /// matter: the tokens they covered have expired by then.
    pub fn is_revoked(&self, q: &RevocationQuery<'_>, now: UnixTime) -> bool {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.jtis.get(q.jti).is_some_and(|&u| u >= now)
            || q.family_id
                .and_then(|f| g.families.get(f))
                .is_some_and(|&u| u >= now)
            || g.subjects
                .get(q.subject)
                .is_some_and(|&min| q.subject_version < min)
            || g.keys.contains(q.kid)
    }

    /// Drops entries whose `until` has passed; returns how many.
    pub fn purge(&self, now: UnixTime) -> usize {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let before = g.jtis.len() + g.families.len();
        g.jtis.retain(|_, u| *u >= now);
        g.families.retain(|_, u| *u >= now);
        before - g.jtis.len() - g.families.len()
    }

    /// Number of jti entries (for metrics and tests).
    pub fn jti_count(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .jtis
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q<'a>(jti: &'a str, sid: Option<&'a str>, ver: u64, kid: &'a str) -> RevocationQuery<'a> {
        RevocationQuery {
            jti,
            family_id: sid,
            subject: "alice",
            subject_version: ver,
            kid,
        }
    }

    #[test]
    fn each_target_revokes() {
        let v = MemoryRevocations::new();
        assert!(!v.is_revoked(&q("j", Some("f"), 0, "k"), 100));
        v.apply(&RevocationEvent::Jti {
            jti: "j".into(),
            until: 200,
        });
        assert!(v.is_revoked(&q("j", None, 0, "k"), 100));
        assert!(!v.is_revoked(&q("j", None, 0, "k"), 201), "past until");
        v.apply(&RevocationEvent::Family {
            family_id: "f".into(),
            until: 300,
        });
        assert!(v.is_revoked(&q("x", Some("f"), 0, "k"), 100));
        v.apply(&RevocationEvent::Subject {
            subject: "alice".into(),
            min_version: 2,
        });
        assert!(v.is_revoked(&q("x", None, 1, "k"), 100));
        assert!(!v.is_revoked(&q("x", None, 2, "k"), 100));
        v.apply(&RevocationEvent::Key { kid: "k".into() });
        assert!(v.is_revoked(&q("x", None, 2, "k"), 100));
        assert!(!v.is_revoked(&q("x", None, 2, "k2"), 100));
    }

    #[test]
    fn purge_drops_only_expired() {
        let v = MemoryRevocations::new();
        for (jti, until) in [("a", 10), ("b", 20)] {
            v.apply(&RevocationEvent::Jti {
                jti: jti.into(),
                until,
            });
        }
        assert_eq!(v.purge(15), 1);
        assert_eq!(v.jti_count(), 1);
    }
}
