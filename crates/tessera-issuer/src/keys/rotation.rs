//! Applying the rotation schedule to the stored keys: the periodic tick
//! (and the bootstrap, which is one tick), on-demand rotation, and the rows
//! that carry out the schedule's steps (shared with the kill path, which
//! runs the next step when it kills the signing key).

use super::{KeyManager, audit_changes};
use tessera_domain::clock::UnixTime;
use tessera_domain::error::{DomainError, Result};
use tessera_domain::keys::{KeyMaterial, KeyState};
use tessera_domain::random_id;
use tessera_domain::schedule::{KeyStep, due_steps, rotate_now};
use tessera_domain::store::StoredKey;
use tessera_telemetry::audit;

impl KeyManager {
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
    pub(super) fn rows_for(
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

    /// A standby of another algorithm than the configured one (the operator
    /// changed `--key-algorithm`): unpublished (it never signed) and
    /// replaced by one of the configured algorithm, due no earlier than it
    /// was and never before `publish_ahead` from now.
    fn replace_stale_standby(&self, keys: &[StoredKey], now: UnixTime) -> Result<Vec<StoredKey>> {
        let mut out = Vec::new();
        for k in keys.iter().filter(|k| self.is_stale_standby(k)) {
            let due = k
                .activates_at
                .unwrap_or(now)
                .max(now + self.schedule.publish_ahead);
            let mut old = k.clone();
            old.state = KeyState::Retired;
            old.retired_at = Some(now);
            out.push(old);
            out.push(self.new_key(KeyState::Pending, Some(due), now)?);
        }
        Ok(out)
    }

    fn is_stale_standby(&self, k: &StoredKey) -> bool {
        k.state == KeyState::Pending && k.algorithm != self.schedule.algorithm
    }

    /// Whether a tick has anything to do (cheap: no key is generated).
    fn tick_due(&self, keys: &[StoredKey], now: UnixTime) -> bool {
        let times: Vec<_> = keys.iter().map(StoredKey::times).collect();
        keys.iter().any(|k| self.is_stale_standby(k))
            || !due_steps(&times, &self.schedule, now).is_empty()
    }

    /// The rows of one tick: a stale standby replaced, then the schedule's
    /// due steps on the keys as they will be.
    pub(super) fn tick_rows(&self, keys: &[StoredKey], now: UnixTime) -> Result<Vec<StoredKey>> {
        let mut rows = self.replace_stale_standby(keys, now)?;
        let all = merged(keys, &rows);
        let times: Vec<_> = all.iter().map(StoredKey::times).collect();
        rows.extend(self.rows_for(&all, &due_steps(&times, &self.schedule, now), now)?);
        Ok(rows)
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
        if !self.tick_due(&keys, now) {
            return self.publish(&keys).map(|()| Vec::new());
        }
        let changed = self
            .store
            .change_keys(&|keys: &[StoredKey]| self.tick_rows(keys, now))
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

    /// Loads or creates the keys at start.
    pub async fn bootstrap(&self) -> Result<()> {
        self.tick().await.map(|_| ())
    }
}

/// `keys` with `rows` written over them (by kid; new rows first).
pub(super) fn merged(keys: &[StoredKey], rows: &[StoredKey]) -> Vec<StoredKey> {
    let mut all = keys.to_vec();
    for r in rows {
        match all.iter_mut().find(|k| k.kid == r.kid) {
            Some(k) => *k = r.clone(),
            None => all.insert(0, r.clone()),
        }
    }
    all
}
