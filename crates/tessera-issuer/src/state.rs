//! The issuer's shared state: what every `IssuerService` handler reads (the
//! keys, the store, the configuration). It sits below the handlers
//! (`issue`, `refresh`, `purpose`) and the service that dispatches to them,
//! so they all depend on it and none on the service.

use crate::keys::KeyManager;
use std::sync::Arc;
use tessera_api::ports::Revoker;
use tessera_domain::clock::Clock;
use tessera_domain::policy::Policy;
use tessera_domain::refresh::{FamilyPolicy, RefreshSecret};
use tessera_domain::store::Store;
use tessera_telemetry::metrics::Metrics;

/// What the issuer needs besides its keys and store.
pub struct IssuerConfig {
    /// Token policy.
    pub policy: Policy,
    /// Family lifetimes and grace.
    pub families: FamilyPolicy,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Derives refresh-token successors.
    pub refresh_secret: RefreshSecret,
    /// The revocation service (in-process, or over gRPC in split roles):
    /// told about reused refresh tokens, password resets that end every
    /// session, and key kills to fan out.
    pub revocations: Arc<dyn Revoker>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// The state the handlers share, behind one `Arc` per service.
pub(crate) struct Inner {
    pub(crate) keys: Arc<KeyManager>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cfg: IssuerConfig,
}
