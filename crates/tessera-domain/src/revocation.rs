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

/// One revocation, as stored and as sent between instances. On the wire
/// (the Redis channel) it is JSON tagged by `t`: `{"t":"jti","jti":…,
/// "until":…}`, `{"t":"family",…}`, `{"t":"subject",…}`, `{"t":"key",…}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
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

/// The compact form of a token or family id in the view: a 64-bit keyed
/// hash. The view holds up to millions of jti entries, so each is 12 bytes
/// of payload (id and expiry) instead of a `String` and an `i64` (~370 bytes
/// measured). Two ids colliding would make a valid token look revoked — the
/// failure is closed, and with 1,000,000 entries its chance per lookup is
/// about 5·10⁻¹⁴; the hash keys are random per process, so no one can aim
/// for a collision.
type Id = u64;

/// An expiry in the view: seconds since the epoch, in 32 bits (good until
/// 2106; a later `until` is held as the largest value, never as an earlier one).
fn until32(until: UnixTime) -> u32 {
    u32::try_from(until.max(0)).unwrap_or(u32::MAX)
}

#[derive(Debug, Default)]
struct Inner {
    jtis: HashMap<Id, u32>,
    families: HashMap<Id, u32>,
    subjects: HashMap<String, u64>,
    keys: HashSet<String>,
}

/// How many entries a view holds, by target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSizes {
    /// Denied token ids.
    pub jtis: usize,
    /// Revoked families.
    pub families: usize,
    /// Subjects with a minimum version.
    pub subjects: usize,
    /// Killed keys.
    pub keys: usize,
}

/// The local revocation view. Reads take a shared lock held for a few hash
/// lookups; writers (revocations, purges) hold it just as briefly.
#[derive(Debug, Default)]
pub struct MemoryRevocations {
    inner: RwLock<Inner>,
    ids: std::collections::hash_map::RandomState,
}

impl MemoryRevocations {
    /// An empty view.
    pub fn new() -> Self {
        Self::default()
    }

    fn id(&self, s: &str) -> Id {
        std::hash::BuildHasher::hash_one(&self.ids, s)
    }

    /// Applies one event. Idempotent; a later `until` wins.
    pub fn apply(&self, event: &RevocationEvent) {
        // Hashed before the lock is taken, so writers hold it for less.
        let id = match event {
            RevocationEvent::Jti { jti: s, .. } | RevocationEvent::Family { family_id: s, .. } => {
                self.id(s)
            }
            _ => 0,
        };
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        match event {
            RevocationEvent::Jti { until, .. } => {
                let e = g.jtis.entry(id).or_insert(0);
                *e = (*e).max(until32(*until));
            }
            RevocationEvent::Family { until, .. } => {
                let e = g.families.entry(id).or_insert(0);
                *e = (*e).max(until32(*until));
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
        let jti = self.id(q.jti);
        let family = q.family_id.map(|f| self.id(f));
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        g.jtis.get(&jti).is_some_and(|&u| i64::from(u) >= now)
            || family
                .and_then(|f| g.families.get(&f))
                .is_some_and(|&u| i64::from(u) >= now)
            || g.subjects
                .get(q.subject)
                .is_some_and(|&min| q.subject_version < min)
            || g.keys.contains(q.kid)
    }

    /// Drops entries whose `until` has passed; returns how many.
    pub fn purge(&self, now: UnixTime) -> usize {
        let mut g = self.inner.write().unwrap_or_else(|p| p.into_inner());
        let before = g.jtis.len() + g.families.len();
        g.jtis.retain(|_, u| i64::from(*u) >= now);
        g.families.retain(|_, u| i64::from(*u) >= now);
        // Give the memory back after a wave of expiries (a map never shrinks
        // by itself).
        let inner = &mut *g;
        for m in [&mut inner.jtis, &mut inner.families] {
            if m.capacity() > 1024 && m.len() < m.capacity() / 4 {
                m.shrink_to_fit();
            }
        }
        before - g.jtis.len() - g.families.len()
    }

    /// How many entries the view holds, by target (for metrics).
    pub fn sizes(&self) -> ViewSizes {
        let g = self.inner.read().unwrap_or_else(|p| p.into_inner());
        ViewSizes {
            jtis: g.jtis.len(),
            families: g.families.len(),
            subjects: g.subjects.len(),
            keys: g.keys.len(),
        }
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
        let sizes = ViewSizes {
            jtis: 1,
            families: 1,
            subjects: 1,
            keys: 1,
        };
        assert_eq!(v.sizes(), sizes);
        v.purge(250);
        assert_eq!(v.sizes(), ViewSizes { jtis: 0, ..sizes });
    }

    #[test]
    fn many_ids_stay_apart_and_a_later_until_wins() {
        let v = MemoryRevocations::new();
        for i in (0..100_000).step_by(2) {
            v.apply(&RevocationEvent::Jti {
                jti: format!("jti-{i}"),
                until: 500,
            });
        }
        assert_eq!(v.jti_count(), 50_000);
        for i in 0..100_000 {
            let revoked = v.is_revoked(&q(&format!("jti-{i}"), None, 0, "k"), 100);
            assert_eq!(revoked, i % 2 == 0, "jti-{i}");
        }
        // An earlier until never shortens an entry; a later one extends it.
        v.apply(&RevocationEvent::Jti {
            jti: "jti-0".into(),
            until: 200,
        });
        assert!(v.is_revoked(&q("jti-0", None, 0, "k"), 400));
        v.apply(&RevocationEvent::Jti {
            jti: "jti-0".into(),
            until: 900,
        });
        assert!(v.is_revoked(&q("jti-0", None, 0, "k"), 800));
        // Beyond 32 bits: held as the largest value, not wrapped to a small one.
        v.apply(&RevocationEvent::Family {
            family_id: "f".into(),
            until: i64::MAX,
        });
        assert!(v.is_revoked(&q("x", Some("f"), 0, "k"), 4_000_000_000));
        assert_eq!(v.purge(501), 49_999);
        assert_eq!(v.jti_count(), 1);
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
