//! Signing keys on the issuer side: the schedule applied to the store, the
//! open active key, the published set, and its changes for watchers.

use std::sync::{Arc, RwLock};
use tessera_domain::clock::{Clock, UnixTime};
use tessera_domain::error::{DomainError, Result};
use tessera_domain::keys::{KeyMaterial, KeyRing, KeySet, KeyState, SigningKey, VerifyingKey};
use tessera_domain::random_id;
use tessera_domain::schedule::{
    KeySchedule, KeyStep, active_since, due_steps, next_rotation, rotate_now,
};
use tessera_domain::seal::Kek;
use tessera_domain::store::{KeyStore, StoredKey};
use tessera_telemetry::audit;
use tokio::sync::watch;

use crate::jwks::JwksDocument;

/// What a kill did.
#[derive(Debug, Clone)]
pub struct Killed {
    /// False when the key was already compromised (nothing changed).
    pub newly: bool,
    /// Its state before.
    pub was: KeyState,
    /// The key now.
    pub key: StoredKey,
    /// The key that signs from now on, when the killed one was signing.
    pub new_active: Option<StoredKey>,
}

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

    /// A new key row: generated, sealed under the KEK.
    fn new_key(
        &self,
        state: KeyState,
        activates_at: Option<UnixTime>,
        now: UnixTime,
    ) -> Result<StoredKey> {
        let kid = random_id();
        let alg = self.schedule.algorithm;
        let material = KeyMaterial::generate(alg, &kid)?;
        Ok(StoredKey {
            sealed_private: self.kek.seal(&kid, &material.pkcs8)?,
            public_jwk: material.public_jwk.to_string(),
            kid,
            algorithm: alg,
            state,
            kek_id: self.kek.id().to_owned(),
            created_at: now,
            activates_at,
            activated_at: (state == KeyState::Active).then_some(now),
            retiring_at: None,
            retired_at: None,
        })
    }

    /// The rows that carry out `steps` (demotions before promotions).
    fn rows_for(
        &self,
        keys: &[StoredKey],
        steps: &[KeyStep],
        now: UnixTime,
    ) -> Result<Vec<StoredKey>> {
        let find = |kid: &str| {
            keys.iter()
                .find(|k| k.kid == kid)
                .cloned()
                .ok_or_else(|| DomainError::Internal("the schedule named an unknown key".into()))
        };
        let mut out = Vec::new();
        for step in steps {
            match step {
                KeyStep::CreateActive => out.push(self.new_key(KeyState::Active, None, now)?),
                KeyStep::CreatePending { activates_at } => {
                    out.push(self.new_key(KeyState::Pending, Some(*activates_at), now)?);
                }
                KeyStep::Activate { kid, previous } => {
                    if let Some(p) = previous {
                        let mut k = find(p)?;
                        k.state = KeyState::Retiring;
                        k.retiring_at = Some(now);
                        out.push(k);
                    }
                    let mut k = find(kid)?;
                    k.state = KeyState::Active;
                    k.activated_at = Some(now);
                    out.push(k);
                }
                KeyStep::Retire { kid } => {
                    let mut k = find(kid)?;
                    k.state = KeyState::Retired;
                    k.retired_at = Some(now);
                    out.push(k);
                }
            }
        }
        Ok(out)
    }

    /// Applies whatever the schedule says is due now (exactly once across
    /// instances: the plan runs again under the store's key lock), then
    /// reloads. Returns the keys that changed. The keys are read first
    /// without the lock: when nothing is due — nearly every tick — no lock is
    /// taken and nothing is written, so idle instances do not queue on the
    /// lock row.
    pub async fn tick(&self) -> Result<Vec<StoredKey>> {
        self.tick_by(audit::SERVER).await
    }

    /// [`Self::tick`] asked for by `actor` (named in the audit trail).
    pub async fn tick_by(&self, actor: &str) -> Result<Vec<StoredKey>> {
        let now = self.clock.now();
        let keys = self.store.load_keys().await?;
        let times: Vec<_> = keys.iter().map(StoredKey::times).collect();
        if due_steps(&times, &self.schedule, now).is_empty() {
            return self.publish(&keys).map(|()| Vec::new());
        }
        let changed = self
            .store
            .change_keys(&|keys: &[StoredKey]| {
                let times: Vec<_> = keys.iter().map(StoredKey::times).collect();
                self.rows_for(keys, &due_steps(&times, &self.schedule, now), now)
            })
            .await?;
        audit_changes(actor, &changed);
        self.reload().await?;
        Ok(changed)
    }

    /// On-demand rotation: publishes the next key, due as soon as the
    /// schedule allows (`publish_ahead` from now); if one is already
    /// published, activates it once that much time has passed since its
    /// publication. Returns the keys that changed. `actor` is named in the
    /// audit trail.
    pub async fn rotate(&self, actor: &str) -> Result<Vec<StoredKey>> {
        let now = self.clock.now();
        let changed = self
            .store
            .change_keys(&|keys: &[StoredKey]| {
                let times: Vec<_> = keys.iter().map(StoredKey::times).collect();
                match rotate_now(&times, &self.schedule, now) {
                    KeyStep::Activate { kid, .. } => {
                        // Bring it forward, but never before it has been
                        // published for `publish_ahead`: the tick activates it.
                        let mut k =
                            keys.iter().find(|k| k.kid == kid).cloned().ok_or_else(|| {
                                DomainError::Internal("pending key vanished".into())
                            })?;
                        let due = (k.created_at + self.schedule.publish_ahead).max(now);
                        if k.activates_at.is_some_and(|a| a <= due) {
                            return Ok(Vec::new());
                        }
                        k.activates_at = Some(due);
                        Ok(vec![k])
                    }
                    step => self.rows_for(keys, &[step], now),
                }
            })
            .await?;
        audit_changes(actor, &changed);
        self.tick_by(actor).await?;
        Ok(changed)
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

    /// Loads or creates the keys at start.
    pub async fn bootstrap(&self) -> Result<()> {
        self.tick().await.map(|_| ())
    }

    /// Kills a key — the one way any key is killed: marked compromised and
    /// unpublished at once; if it was signing, the schedule's next step (the
    /// pending key, or a new one) runs in the same transaction, so another
    /// key signs at once. One key-lock transaction, exactly once across
    /// racing instances; the published set comes from the plan's own read.
    /// `None` for an unknown kid. `actor` is named in the audit trail.
    pub async fn compromise(&self, kid: &str, actor: &str) -> Result<Option<Killed>> {
        let now = self.clock.now();
        let after: std::sync::Mutex<Option<(KeyState, Vec<StoredKey>)>> = Default::default();
        let changed = self
            .store
            .change_keys(&|keys: &[StoredKey]| {
                let Some(was) = keys.iter().find(|k| k.kid == kid).map(|k| k.state) else {
                    return Ok(Vec::new());
                };
                let mut all = keys.to_vec();
                let mut rows = Vec::new();
                if was != KeyState::Compromised {
                    for k in all.iter_mut().filter(|k| k.kid == kid) {
                        k.state = KeyState::Compromised;
                        k.retired_at = Some(now);
                        rows.push(k.clone());
                    }
                    let times: Vec<_> = all.iter().map(StoredKey::times).collect();
                    let next = self.rows_for(&all, &due_steps(&times, &self.schedule, now), now)?;
                    for r in &next {
                        match all.iter_mut().find(|k| k.kid == r.kid) {
                            Some(k) => *k = r.clone(),
                            None => all.insert(0, r.clone()),
                        }
                    }
                    rows.extend(next);
                }
                *after.lock().unwrap_or_else(|p| p.into_inner()) = Some((was, all));
                Ok(rows)
            })
            .await?;
        let Some((was, all)) = after.into_inner().unwrap_or_else(|p| p.into_inner()) else {
            return Ok(None);
        };
        audit_changes(actor, &changed);
        self.publish(&all)?;
        let find = |f: &dyn Fn(&StoredKey) -> bool| all.iter().find(|k| f(k)).cloned();
        Ok(Some(Killed {
            newly: !changed.is_empty(),
            was,
            key: find(&|k| k.kid == kid)
                .ok_or_else(|| DomainError::Internal("a killed key vanished".into()))?,
            new_active: (was == KeyState::Active)
                .then(|| find(&|k| k.state == KeyState::Active))
                .flatten(),
        }))
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

#[tonic::async_trait]
impl tessera_api::ports::KeyKiller for KeyManager {
    // The reason is the caller's free text: it is not logged (it could
    // carry anything); the audit trail names the key and who killed it.
    async fn kill(
        &self,
        kid: &str,
        _reason: &str,
        caller: &str,
    ) -> std::result::Result<bool, tonic::Status> {
        let killed = self
            .compromise(kid, caller)
            .await
            .map_err(tessera_api::from_domain)?;
        Ok(killed.is_some())
    }
}
