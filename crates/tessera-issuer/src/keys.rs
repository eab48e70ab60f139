//! Signing keys on the issuer side: the `KeyManager` that owns them, opens
//! the active key, publishes the set into the shared ring and tells
//! watchers when it changed. Applying the rotation schedule (the tick and
//! on-demand rotation) is in `rotation`, killing a key in `kill`; both
//! change the stored keys and then publish through this module.

mod kill;
mod rotation;

use std::sync::{Arc, RwLock};
use tessera_domain::clock::{Clock, UnixTime};
use tessera_domain::error::{DomainError, Result};
use tessera_domain::keys::{KeyRing, KeySet, KeyState, SigningKey, VerifyingKey};
use tessera_domain::schedule::{KeySchedule, active_since, next_rotation};
use tessera_domain::seal::Kek;
use tessera_domain::store::{KeyStore, StoredKey};
use tessera_telemetry::audit;
use tokio::sync::watch;

use crate::jwks::JwksDocument;

/// Owns the keys: applies the schedule, opens the active key, publishes the
/// set into the shared [`KeyRing`] and tells watchers when it changed.
pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    kek: Kek,
    /// The KEK being replaced, during a rewrap: opens, never seals.
    previous_kek: Option<Kek>,
    clock: Arc<dyn Clock>,
    ring: Arc<KeyRing>,
    schedule: KeySchedule,
    active: RwLock<Option<Arc<SigningKey>>>,
    /// Kid and state of every stored key at the last reload.
    seen: RwLock<Vec<(String, KeyState)>>,
    /// The JWKS document of the published set, rendered once per change
    /// (HTTP GET, GetJwks and WatchKeys all serve this one).
    jwks: RwLock<Arc<JwksDocument>>,
    changes: watch::Sender<u64>,
    /// Where the key age and the time to the next rotation are reported.
    metrics: Option<Arc<tessera_telemetry::metrics::Metrics>>,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager").finish_non_exhaustive()
    }
}

impl KeyManager {
    /// A manager publishing into `ring`.
    pub fn new(
        store: Arc<dyn KeyStore>,
        kek: Kek,
        clock: Arc<dyn Clock>,
        ring: Arc<KeyRing>,
        schedule: KeySchedule,
    ) -> Self {
        Self {
            store,
            kek,
            previous_kek: None,
            clock,
            ring,
            schedule,
            active: RwLock::new(None),
            seen: RwLock::new(Vec::new()),
            jwks: RwLock::new(Arc::new(JwksDocument::of(&KeySet::default(), 0))),
            changes: watch::channel(0).0,
            metrics: None,
        }
    }

    /// Reports the signing key's age and the time to the next rotation
    /// into `metrics` at every reload (every schedule tick).
    pub fn with_metrics(mut self, metrics: Arc<tessera_telemetry::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Also opens keys sealed under `previous` (while a rewrap to the
    /// current KEK is under way: instances run with both, then the rewrap
    /// re-seals every row, then `previous` can go).
    pub fn with_previous_kek(mut self, previous: Option<Kek>) -> Self {
        self.previous_kek = previous;
        self
    }

    fn open(&self, k: &StoredKey) -> Result<tessera_domain::Secret> {
        match &self.previous_kek {
            Some(p) if p.id() == k.kek_id && self.kek.id() != k.kek_id => {
                p.open(&k.kid, &k.sealed_private)
            }
            _ => self.kek.open(&k.kid, &k.sealed_private),
        }
    }

    /// The named service secret (32 random bytes), created and stored
    /// sealed on first use; the same for every instance of a deployment and
    /// unchanged by a KEK rewrap.
    pub async fn service_secret(&self, name: &str) -> Result<tessera_domain::Secret> {
        if self.store.load_secret(name).await?.is_none() {
            let fresh = tessera_domain::Secret::new(tessera_domain::random_bytes(32));
            let sealed = self.kek.seal(name, &fresh)?;
            self.store
                .store_secret(name, &sealed, self.kek.id(), false)
                .await?;
        }
        let (sealed, kek_id) = self
            .store
            .load_secret(name)
            .await?
            .ok_or_else(|| DomainError::Internal("a stored secret vanished".into()))?;
        match &self.previous_kek {
            Some(p) if p.id() == kek_id && self.kek.id() != kek_id => p.open(name, &sealed),
            _ => self.kek.open(name, &sealed),
        }
    }

    /// Now, by the manager's clock.
    pub fn now(&self) -> UnixTime {
        self.clock.now()
    }

    /// The schedule in force.
    pub fn schedule(&self) -> &KeySchedule {
        &self.schedule
    }

    /// Loads the keys; if the set changed, opens the active key and
    /// publishes the new set.
    pub async fn reload(&self) -> Result<()> {
        let keys = self.store.load_keys().await?;
        self.publish(&keys)
    }

    /// If `keys` differ from the set last published: opens the active key
    /// and publishes them.
    fn publish(&self, keys: &[StoredKey]) -> Result<()> {
        if let Some(m) = &self.metrics {
            // Before the early return: an on-demand rotation moves the next
            // key's time without changing any state.
            let times: Vec<_> = keys.iter().map(StoredKey::times).collect();
            m.key_schedule(active_since(&times), next_rotation(&times, &self.schedule));
        }
        let seen: Vec<_> = keys.iter().map(|k| (k.kid.clone(), k.state)).collect();
        if *self.seen.read().unwrap_or_else(|p| p.into_inner()) == seen {
            return Ok(());
        }
        let active = keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .ok_or(DomainError::NoSigningKey)?;
        let pkcs8 = self.open(active)?;
        let signer = SigningKey::from_pkcs8(&active.kid, active.algorithm, &pkcs8)?;
        let mut published = Vec::new();
        for k in keys.iter().filter(|k| k.state.is_published()) {
            let jwk = serde_json::from_str(&k.public_jwk)
                .map_err(|_| DomainError::Internal("stored public JWK is not JSON".into()))?;
            published.push(VerifyingKey::from_jwk(jwk, k.state)?);
        }
        let set = KeySet::new(published);
        let doc = JwksDocument::of(&set, self.schedule.jwks_max_age);
        self.ring.replace(set);
        *self.jwks.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(doc);
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(signer));
        *self.seen.write().unwrap_or_else(|p| p.into_inner()) = seen;
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Every stored key, newest first.
    pub async fn list(&self) -> Result<Vec<StoredKey>> {
        self.store.load_keys().await
    }

    /// Roughly how many sessions hold a live token signed by a key that
    /// signed from `activated_at` (sessions used since then, within the
    /// longest access-token life).
    pub async fn affected_sessions(&self, since: UnixTime) -> Result<u64> {
        self.store.sessions_used_since(since).await
    }

    /// The key that signs now.
    pub fn signing_key(&self) -> Result<Arc<SigningKey>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(DomainError::NoSigningKey)
    }

    /// The ring Verify trusts (the published set and its signature cache).
    pub fn ring(&self) -> &KeyRing {
        &self.ring
    }

    /// The published set.
    pub fn key_set(&self) -> Arc<KeySet> {
        self.ring.current()
    }

    /// A receiver that changes whenever the published set does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// The JWKS document of the published set (rendered when it changed).
    pub fn jwks(&self) -> Arc<JwksDocument> {
        self.jwks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Each key that changed state, in the audit trail.
fn audit_changes(actor: &str, changed: &[StoredKey]) {
    for k in changed {
        audit::key_state(actor, &k.kid, k.state, k.activates_at);
    }
}
