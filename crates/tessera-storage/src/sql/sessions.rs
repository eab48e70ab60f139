//! Families, refresh-token rotation, subject versions and purpose tokens.

use super::{SqlStore, store_err, to_i64, to_u64};
use async_trait::async_trait;
use sqlx::Row;
use tessera_domain::clock::UnixTime;
use tessera_domain::error::Result;
use tessera_domain::purpose::RedeemOutcome;
use tessera_domain::refresh::{FamilyRecord, RotateOutcome, RotateRequest};
use tessera_domain::store::{NewFamily, SessionStore};

#[async_trait]
impl SessionStore for SqlStore {
    async fn subject_version(&self, subject: &str) -> Result<u64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT version FROM subjects WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(v.map_or(0, to_u64))
    }

    async fn open_family(&self, f: &NewFamily) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        sqlx::query(
            "INSERT INTO families (family_id, subject, audience, scope, client_id, created_at, last_used_at, idle_expires_at, absolute_expires_at, subject_version) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&f.family_id)
        .bind(&f.subject)
        .bind(&f.audience)
        .bind(&f.scope)
        .bind(&f.client_id)
        .bind(f.created_at)
        .bind(f.created_at)
        .bind(f.idle_expires_at)
        .bind(f.absolute_expires_at)
        .bind(to_i64(f.subject_version))
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at) VALUES ($1, $2, 0, $3)",
        )
        .bind(f.refresh_token_hash.to_vec())
        .bind(&f.family_id)
        .bind(f.created_at)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        tx.commit().await.map_err(store_err)
    }

    async fn rotate(&self, req: &RotateRequest, scopes: &[String]) -> Result<RotateOutcome> {
        let now = req.now;
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        // Lock the family before reading anything. On Postgres this UPDATE
        // takes the family's row lock (Revoke takes the same one); on SQLite
        // the first write takes the database write lock, so the transaction
        // never has to upgrade a read snapshot (WAL mode refuses that with
        // SQLITE_BUSY_SNAPSHOT instead of waiting).
        let locked = sqlx::query(
            "UPDATE families SET last_used_at = last_used_at \
             WHERE family_id = (SELECT family_id FROM refresh_tokens WHERE token_hash = $1)",
        )
        .bind(req.presented.to_vec())
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        if locked.rows_affected() == 0 {
            tx.rollback().await.map_err(store_err)?;
            return Ok(RotateOutcome::Unknown);
        }
        let row = sqlx::query(
            "SELECT f.family_id, f.subject, f.audience, f.scope, f.client_id, f.idle_expires_at, \
                    f.absolute_expires_at, f.revoked_at, t.consumed_at, t.successor_hash, t.generation, \
                    f.subject_version, \
                    COALESCE((SELECT s.version FROM subjects s WHERE s.subject = f.subject), 0) \
             FROM refresh_tokens t JOIN families f ON f.family_id = t.family_id \
             WHERE t.token_hash = $1",
        )
        .bind(req.presented.to_vec())
        .fetch_one(&mut *tx)
        .await
        .map_err(store_err)?;
        let mut family = FamilyRecord {
            family_id: row.try_get(0).map_err(store_err)?,
            subject: row.try_get(1).map_err(store_err)?,
            audience: row.try_get(2).map_err(store_err)?,
            scope: row.try_get(3).map_err(store_err)?,
            client_id: row.try_get(4).map_err(store_err)?,
            idle_expires_at: row.try_get(5).map_err(store_err)?,
            absolute_expires_at: row.try_get(6).map_err(store_err)?,
            subject_version: to_u64(row.try_get(11).map_err(store_err)?),
        };
        let current_version: i64 = row.try_get(12).map_err(store_err)?;
        let revoked_at: Option<i64> = row.try_get(7).map_err(store_err)?;
        let consumed_at: Option<i64> = row.try_get(8).map_err(store_err)?;
        let successor: Option<Vec<u8>> = row.try_get(9).map_err(store_err)?;
        let generation: i64 = row.try_get(10).map_err(store_err)?;

        // A family opened under an older subject version was revoked with its
        // subject, even if its row was written after that revocation.
        let early = if revoked_at.is_some() || to_u64(current_version) > family.subject_version {
            Some(RotateOutcome::Revoked)
        } else if now >= family.absolute_expires_at {
            Some(RotateOutcome::LifetimeExpired)
        } else if now >= family.idle_expires_at {
            Some(RotateOutcome::IdleExpired)
        } else {
            None
        };
        if let Some(outcome) = early {
            tx.rollback().await.map_err(store_err)?;
            return Ok(outcome);
        }
        // Reuse is judged before the scopes, so a stolen, consumed token
        // cannot probe without revoking its family.
        let scope_granted = scopes
            .iter()
            .all(|s| family.scope.split(' ').any(|g| g == s));

        let Some(consumed_at) = consumed_at else {
            if !scope_granted {
                tx.rollback().await.map_err(store_err)?;
                return Ok(RotateOutcome::ScopeNotGranted);
            }
            // The current token: consume it and make its successor current.
            let idle = (now + req.policy.idle_timeout).min(family.absolute_expires_at);
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(req.successor.to_vec())
            .bind(&family.family_id)
            .bind(generation + 1)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
            sqlx::query(
                "UPDATE refresh_tokens SET consumed_at = $1, successor_hash = $2 WHERE token_hash = $3",
            )
            .bind(now)
            .bind(req.successor.to_vec())
            .bind(req.presented.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
            sqlx::query(
                "UPDATE families SET last_used_at = $1, idle_expires_at = $2 WHERE family_id = $3",
            )
            .bind(now)
            .bind(idle)
            .bind(&family.family_id)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
            tx.commit().await.map_err(store_err)?;
            family.idle_expires_at = idle;
            return Ok(RotateOutcome::Rotated {
                family,
                fresh: true,
            });
        };

        // A consumed token. Only the immediate predecessor of the current
        // token, inside the grace window, replays its rotation.
        let successor_current = match successor.as_deref() {
            Some(s) if s == req.successor.as_slice() => {
                let c: Option<Option<i64>> = sqlx::query_scalar(
                    "SELECT consumed_at FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(s.to_vec())
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_err)?;
                matches!(c, Some(None))
            }
            _ => false,
        };
        let grace = req.policy.grace;
        if successor_current && grace > 0 && now - consumed_at <= grace {
            tx.commit().await.map_err(store_err)?;
            if !scope_granted {
                return Ok(RotateOutcome::ScopeNotGranted);
            }
            return Ok(RotateOutcome::Rotated {
                family,
                fresh: false,
            });
        }
        // Reuse (RFC 9700 section 4.14.2): revoke the whole family.
        sqlx::query("UPDATE families SET revoked_at = $1 WHERE family_id = $2")
            .bind(now)
            .bind(&family.family_id)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        Ok(RotateOutcome::Reused { family })
    }

    async fn record_purpose(
        &self,
        jti: &str,
        subject: &str,
        kind: &str,
        binding_hash: Option<[u8; 32]>,
        expires_at: UnixTime,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO purpose_tokens (jti, subject, kind, binding_hash, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(jti)
        .bind(subject)
        .bind(kind)
        .bind(binding_hash.map(|h| h.to_vec()))
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn redeem_purpose(
        &self,
        jti: &str,
        binding_hash: Option<[u8; 32]>,
        now: UnixTime,
    ) -> Result<RedeemOutcome> {
        let stored: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT binding_hash FROM purpose_tokens WHERE jti = $1")
                .bind(jti)
                .fetch_optional(&self.pool)
                .await
                .map_err(store_err)?;
        let Some(stored) = stored else {
            return Ok(RedeemOutcome::Unknown);
        };
        if stored.as_deref() != binding_hash.as_ref().map(<[u8; 32]>::as_slice) {
            return Ok(RedeemOutcome::BindingMismatch);
        }
        // The single atomic step: only one UPDATE can see `redeemed_at IS NULL`.
        let done = sqlx::query(
            "UPDATE purpose_tokens SET redeemed_at = $1 WHERE jti = $2 AND redeemed_at IS NULL",
        )
        .bind(now)
        .bind(jti)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(if done.rows_affected() == 1 {
            RedeemOutcome::Redeemed
        } else {
            RedeemOutcome::AlreadyUsed
        })
    }
}
