//! The verified-signature cache (`docs/architecture.md`, "Verify": steps 1–3
//! may be cached by a hash of the whole token until its `exp`).
//!
//! A token is usually presented many times in its short life, and the
//! signature check is nearly all of Verify's cost. A hit skips steps 1–3
//! only: the time, issuer, audience and kind checks (step 4) and the
//! revocation view (step 5) run on every call, so a cached token is still
//! rejected the moment it is revoked or expires.
//!
//! Safety of a hit rests on three rules:
//! - the key is the SHA-256 of the exact token bytes, so a hit is the same
//!   header, payload and signature that verified before;
//! - a hit counts only while its `kid` is in the *current* key set: a
//!   retired or compromised key leaves the set, and its entries stop
//!   counting at that instant (they are also dropped when the set changes,
//!   which frees the memory);
//! - an entry past its token's `exp` (plus skew) is removed when met and by
//!   the periodic purge, and never answers again.
//!
//! Bounded in memory by weight (an estimate of each entry's bytes), which
//! also bounds the entry count; the eviction policy is quick_cache's.

use crate::claims::Audience;
use crate::clock::UnixTime;
use crate::keys::KeySet;
use crate::policy::Policy;
use crate::verify::{Failure, Signed, verify_signature};
use std::sync::Arc;

/// A cached result of steps 1–3.
#[derive(Clone)]
struct Entry {
    signed: Arc<Signed>,
    /// Estimated bytes held, fixed at insertion (the weigher must be cheap
    /// and constant per entry).
    weight: u32,
}

#[derive(Clone, Copy)]
struct ByWeight;

impl quick_cache::Weighter<[u8; 32], Entry> for ByWeight {
    fn weight(&self, _key: &[u8; 32], val: &Entry) -> u64 {
        u64::from(val.weight)
    }
}

/// Fixed cost of one entry beyond its claims: the digest, the `Arc`,
/// `Signed`'s own fields and the cache's slot.
const ENTRY_OVERHEAD: usize = 256;

/// Verified signatures by token digest. Disabled when built with 0 bytes.
pub struct SignatureCache {
    cache: Option<quick_cache::sync::Cache<[u8; 32], Entry, ByWeight>>,
}

impl std::fmt::Debug for SignatureCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignatureCache")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

impl Default for SignatureCache {
    /// A disabled cache: every call checks the signature.
    fn default() -> Self {
        Self::new(0)
    }
}

fn estimate(signed: &Signed) -> u32 {
    let c = &signed.claims;
    let strings = c.iss.len()
        + c.sub.len()
        + c.jti.len()
        + signed.kid.len()
        + c.sid.as_ref().map_or(0, String::len)
        + c.scope.as_ref().map_or(0, String::len)
        + c.client_id.as_ref().map_or(0, String::len)
        + match &c.aud {
            Audience::One(a) => a.len(),
            Audience::Many(v) => v.iter().map(|a| a.len() + 24).sum(),
        }
        // Extra claims: a rough bound of their JSON size.
        + c.extra.iter().map(|(k, v)| k.len() + v.to_string().len() + 64).sum::<usize>();
    u32::try_from(ENTRY_OVERHEAD + strings).unwrap_or(u32::MAX)
}

impl SignatureCache {
    /// A cache holding at most about `max_bytes` of entries; 0 disables it.
    pub fn new(max_bytes: u64) -> Self {
        let cache = (max_bytes > 0).then(|| {
            let items = usize::try_from(max_bytes / 512)
                .unwrap_or(usize::MAX)
                .max(16);
            quick_cache::sync::Cache::with_weighter(items, max_bytes, ByWeight)
        });
        Self { cache }
    }

    /// Steps 1–3 for `token` against `keys`, from the cache when this exact
    /// token verified before with a key still in `keys`.
    pub fn verify_signature(
        &self,
        token: &str,
        keys: &KeySet,
        policy: &Policy,
        now: UnixTime,
    ) -> Result<Arc<Signed>, Failure> {
        let Some(cache) = &self.cache else {
            return verify_signature(token, keys, policy).map(Arc::new);
        };
        let digest = digest(token);
        if let Some(e) = cache.get(&digest) {
            if now >= e.signed.claims.exp.saturating_add(policy.clock_skew) {
                // Dead at its expiry: gone, and the pipeline says Expired.
                cache.remove(&digest);
            } else if keys.get(&e.signed.kid).is_some() {
                return Ok(e.signed);
            }
        }
        let signed = Arc::new(verify_signature(token, keys, policy)?);
        if now >= signed.claims.exp.saturating_add(policy.clock_skew) {
            return Ok(signed); // never cache what is already dead
        }
        let weight = estimate(&signed);
        cache.insert(
            digest,
            Entry {
                signed: signed.clone(),
                weight,
            },
        );
        Ok(signed)
    }

    /// Drops every entry whose key is not in `keys` (a key retired or
    /// compromised): called whenever the key set changes.
    pub fn retain_keys(&self, keys: &KeySet) {
        if let Some(c) = &self.cache {
            c.retain(|_, e| keys.get(&e.signed.kid).is_some());
        }
    }

    /// Drops every entry whose token expired (with `skew`) by `now`.
    pub fn purge_expired(&self, now: UnixTime, skew: i64) {
        if let Some(c) = &self.cache {
            c.retain(|_, e| now < e.signed.claims.exp.saturating_add(skew));
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, quick_cache::sync::Cache::len)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Estimated bytes held.
    pub fn weight(&self) -> u64 {
        self.cache
            .as_ref()
            .map_or(0, quick_cache::sync::Cache::weight)
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
#[path = "sigcache_tests.rs"]
mod tests;
