//! The published key set: the keys Verify trusts, and the JWKS.

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
