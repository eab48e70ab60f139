//! The published key set and the ring Verify reads (with its signature cache).

use super::VerifyingKey;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// The published keys by kid: what Verify trusts. Immutable; a change
/// builds a new set and swaps the `Arc`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    /// A set of the published keys among `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .filter(|k| k.state().is_published())
                .map(|k| (k.kid().to_owned(), Arc::new(k)))
                .collect(),
        }
    }

    /// The key named `kid`, if published.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.get(kid)
    }

    /// Every published key, sorted by kid (a stable JWKS order).
    pub fn keys(&self) -> Vec<&Arc<VerifyingKey>> {
        let mut v: Vec<_> = self.keys.values().collect();
        v.sort_by(|a, b| a.kid().cmp(b.kid()));
        v
    }

    /// The RFC 7517 JWK Set document.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys().iter().map(|k| k.jwk().clone()).collect::<Vec<_>>()})
    }
}

/// The key set currently trusted, shared between whoever publishes keys and
/// Verify, with the cache of signatures those keys verified. Readers clone an
/// `Arc` under a read lock held for that clone only.
#[derive(Debug, Default)]
pub struct KeyRing {
    set: std::sync::RwLock<Arc<KeySet>>,
    signatures: crate::sigcache::SignatureCache,
}

impl KeyRing {
    /// An empty ring whose verified-signature cache holds about
    /// `cache_bytes` (0: no cache).
    pub fn with_signature_cache(cache_bytes: u64) -> Self {
        Self {
            set: std::sync::RwLock::default(),
            signatures: crate::sigcache::SignatureCache::new(cache_bytes),
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
        policy: &crate::policy::Policy,
        now: crate::clock::UnixTime,
    ) -> std::result::Result<Arc<crate::verify::Signed>, crate::verify::Failure> {
        self.signatures
            .verify_signature(token, &self.current(), policy, now)
    }

    /// The verified-signature cache.
    pub fn signatures(&self) -> &crate::sigcache::SignatureCache {
        &self.signatures
    }
}
