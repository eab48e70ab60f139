//! Verify through the key ring: steps 1–3 from the ring's verified-signature
//! cache (`docs/architecture.md`, "Verify"), then step 5 against the
//! in-memory view or, for `consistency = STRONG`, the durable store.
//!
//! Apart from the pure pipeline in the parent: the ring's cache calls the
//! pipeline's steps 1–3, so the pipeline itself must not know the ring.

use super::{Expectation, Failure, Signed, check_after_signature, check_claims};
use crate::clock::UnixTime;
use crate::keys::KeyRing;
use crate::policy::Policy;
use crate::revocation::MemoryRevocations;
use crate::store::RevocationStore;
use std::sync::Arc;

/// [`verify`](super::verify) with steps 1–3 through the ring's
/// verified-signature cache; steps 4 and 5 run on every call.
pub fn verify_cached(
    token: &str,
    ring: &KeyRing,
    policy: &Policy,
    expect: &Expectation<'_>,
    revocations: &MemoryRevocations,
    now: UnixTime,
) -> Result<Arc<Signed>, Failure> {
    let signed = ring.verify_signature(token, policy, now)?;
    check_after_signature(&signed, expect, policy, revocations, now)?;
    Ok(signed)
}

/// Steps 1–4 locally (through the ring's cache), step 5 against the durable
/// store: `consistency = STRONG`, for a caller that needs read-your-writes.
/// The outer error is the store's; the inner one is the token's failure.
pub async fn verify_strong(
    token: &str,
    ring: &KeyRing,
    policy: &Policy,
    expect: &Expectation<'_>,
    store: &dyn RevocationStore,
    now: UnixTime,
) -> crate::error::Result<Result<Arc<Signed>, Failure>> {
    let signed = match ring
        .verify_signature(token, policy, now)
        .and_then(|s| check_claims(&s, expect, policy, now).map(|()| s))
    {
        Ok(s) => s,
        Err(f) => return Ok(Err(f)),
    };
    if store.is_revoked(&signed.revocation_query(), now).await? {
        return Ok(Err(Failure::Revoked));
    }
    Ok(Ok(signed))
}
