//! Killing a key (the compromise path): the one way any key is killed,
//! from the operator's `KeyService` call or another service through the
//! `KeyKiller` port.

use super::{KeyManager, audit_changes};
use tessera_domain::error::{DomainError, Result};
use tessera_domain::keys::KeyState;
use tessera_domain::schedule::due_steps;
use tessera_domain::store::StoredKey;

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

impl KeyManager {
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
                    all = super::rotation::merged(&all, &next);
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
    ) -> std::result::Result<Option<bool>, tonic::Status> {
        let killed = self
            .compromise(kid, caller)
            .await
            .map_err(tessera_api::from_domain)?;
        Ok(killed.map(|k| k.newly))
    }
}
