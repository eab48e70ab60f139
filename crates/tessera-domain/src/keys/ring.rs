//! The ring Verify reads: the key set currently trusted and the cache of
//! the signatures its keys verified (`docs/architecture.md`, "Verify").
//!
//! Kept apart from [`KeySet`]: the signature cache checks its hits against a
//! set and the ring owns a cache, so in one module the two would depend on
//! each other.

use super::KeySet;
use crate::clock::UnixTime;
use crate::policy::Policy;
use crate::sigcache::SignatureCache;
use crate::verify::{Failure, Signed};
use std::sync::{Arc, RwLock};

/// The key set currently trusted, shared between whoever publishes keys and
/// Verify, with the cache of signatures those keys verified. Readers clone an
/// `Arc` under a read lock held for that clone only.
#[derive(Debug, Default)]
pub struct KeyRing {
    set: RwLock<Arc<KeySet>>,
    signatures: SignatureCache,
}

impl KeyRing {
    /// An empty ring whose verified-signature cache holds about
    /// `cache_bytes` (0: no cache).
    pub fn with_signature_cache(cache_bytes: u64) -> Self {
        Self {
            set: RwLock::default(),
            signatures: SignatureCache::new(cache_bytes),
        }
    }

    /// The current set.
    pub fn current(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the set, and drops the cached signatures of every key that
    /// left it (retired or compromised). Hits already require the key in the
    /// current set, so this only frees their memory.
    pub fn replace(&self, set: KeySet) {
        let set = Arc::new(set);
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = set.clone();
        self.signatures.retain_keys(&set);
    }

    /// Verify steps 1–3 against the current set, through the cache.
    pub fn verify_signature(
        &self,
        token: &str,
        policy: &Policy,
        now: UnixTime,
    ) -> Result<Arc<Signed>, Failure> {
        self.signatures
            .verify_signature(token, &self.current(), policy, now)
    }

    /// The verified-signature cache.
    pub fn signatures(&self) -> &SignatureCache {
        &self.signatures
    }
}
