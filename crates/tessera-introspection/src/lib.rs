//! The introspection and revocation service: `Verify` over the in-memory key
//! set and revocation view (no network hop by default), `Revoke`, durable
//! before it returns and fanned out to every instance, and
//! `WatchRevocations`, which streams the store's revocation log.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod follow;
mod gateway;
mod introspect;
mod revoke;
mod watch;

pub use follow::KeyFollower;
pub use gateway::{Answer, Asked, ExtAuthz, Gateway, ViewAge};
pub use introspect::IntrospectionApi;
pub use revoke::RevocationApi;

use std::sync::Arc;
use tessera_domain::clock::Clock;
use tessera_domain::keys::KeyRing;
use tessera_domain::policy::Policy;
use tessera_domain::revocation::{MemoryRevocations, RevocationEvent};
use tessera_domain::store::{RevocationBus, Store};

/// Where the key set Verify trusts comes from (a port: the issuer's ring in
/// the embedded mode, the `WatchKeys` follower in split roles).
pub trait KeySource: Send + Sync {
    /// The ring Verify reads.
    fn ring(&self) -> &KeyRing;
    /// A Verify met a kid that is not in the set (a follower refetches, at a
    /// bounded rate; the issuer's own ring is always current).
    fn unknown_kid(&self) {}
}

impl KeySource for KeyRing {
    fn ring(&self) -> &KeyRing {
        self
    }
}

impl KeySource for Arc<KeyFollower> {
    fn ring(&self) -> &KeyRing {
        self.key_ring()
    }
    fn unknown_kid(&self) {
        KeyFollower::unknown_kid(self);
    }
}

/// What both services of this crate share.
#[derive(Clone)]
pub struct Verifier {
    /// The published keys: the issuer's own ring in one process, or a
    /// follower of the issuer's `WatchKeys` in split roles.
    pub keys: Arc<dyn KeySource>,
    /// Who kills a key for `Revoke{kid}`: the issuer's key manager (in
    /// process, or over gRPC).
    pub key_killer: Arc<dyn tessera_api::ports::KeyKiller>,
    /// The local revocation view.
    pub view: Arc<MemoryRevocations>,
    /// The durable revocations (truth; STRONG reads).
    pub store: Arc<dyn Store>,
    /// The fan-out to other instances.
    pub bus: Arc<dyn RevocationBus>,
    /// Token policy.
    pub policy: Arc<Policy>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Counters.
    pub metrics: Arc<tessera_telemetry::metrics::Metrics>,
    /// Failed verifications, summarised into the audit trail.
    pub failures: Arc<tessera_telemetry::audit::VerifyFailures>,
    /// Every revocation this instance applies: it wakes the
    /// `WatchRevocations` streams, which then read the log.
    pub feed: tokio::sync::broadcast::Sender<RevocationEvent>,
    /// Turns true when the server shuts down: ends open streams.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Verifier {
    /// Applies a revocation to the local view and tells the watchers.
    pub fn apply(&self, event: &RevocationEvent) {
        self.view.apply(event);
        // No watcher is not an error.
        let _ = self.feed.send(event.clone());
    }
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").finish_non_exhaustive()
    }
}
