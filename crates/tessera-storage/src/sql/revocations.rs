//! Durable revocations, the STRONG step 5, and housekeeping.

use super::error::store_err;
use super::{SqlStore, log_revocation, to_i64, to_u64};
use async_trait::async_trait;
use sqlx::Row;
use tessera_domain::clock::UnixTime;
use tessera_domain::error::Result;
use tessera_domain::reconcile::{LogPage, LogQuery, LogStart};
use tessera_domain::revocation::{RevocationEvent, RevocationQuery};
use tessera_domain::store::{Housekeeping, RevocationStore};
use tokio_stream::StreamExt;

/// How long `revocation_log` keeps a row, seconds. A view whose last
/// reconcile is older than half of this reloads in full instead.
pub const REVOCATION_LOG_RETENTION: i64 = 3600;

#[async_trait]
impl RevocationStore for SqlStore {
    async fn revocation_cursor(&self) -> Result<LogStart> {
        // The snapshot first: whatever commits after it is swept later.
        let snapshot = self.log_snapshot().await?;
        let high =
            sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM revocation_log")
                .fetch_one(&self.pool)
                .await
                .map_err(store_err)?;
        Ok(LogStart { high, snapshot })
    }

    async fn revocations_after(&self, q: &LogQuery, family_margin: i64) -> Result<LogPage> {
        self.log_page(q, family_margin).await
    }

    async fn revoke_jti(&self, jti: &str, until: UnixTime, now: UnixTime) -> Result<bool> {
        let mut conn = self.write_conn().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(until)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        let newly = done.rows_affected() > 0;
        if newly {
            log_revocation(&mut tx, "jti", jti, until, now).await?;
        }
        tx.commit().await.map_err(store_err)?;
        conn.ended();
        Ok(newly)
    }

    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
    ) -> Result<Option<(bool, UnixTime)>> {
        // The UPDATE waits for (and then excludes) any rotation holding the
        // family's lock: once it commits, no rotation of this family succeeds.
        let mut conn = self.write_conn().await?;
        let mut tx = conn.begin().await?;
        let done = sqlx::query(
            "UPDATE families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(family_id)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        let newly = done.rows_affected() > 0;
        if newly {
            log_revocation(&mut tx, "family", family_id, now, now).await?;
        }
        let end: Option<i64> =
            sqlx::query_scalar("SELECT absolute_expires_at FROM families WHERE family_id = $1")
                .bind(family_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        conn.ended();
        Ok(end.map(|e| (newly, e)))
    }

    async fn family_audience(&self, family_id: &str) -> Result<Option<String>> {
        sqlx::query_scalar("SELECT audience FROM families WHERE family_id = $1")
            .bind(family_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)
    }

    async fn revoke_subject(
        &self,
        subject: &str,
        bump_version: bool,
        now: UnixTime,
    ) -> Result<(u64, u64)> {
        let mut conn = self.write_conn().await?;
        let mut tx = conn.begin().await?;
        // Writes first (see `rotate` for why that matters on SQLite).
        let families = sqlx::query(
            "UPDATE families SET revoked_at = $1 WHERE subject = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(subject)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?
        .rows_affected();
        if bump_version {
            sqlx::query(
                "INSERT INTO subjects (subject, version) VALUES ($1, 1) \
                 ON CONFLICT (subject) DO UPDATE SET version = subjects.version + 1",
            )
            .bind(subject)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        }
        let version: Option<i64> =
            sqlx::query_scalar("SELECT version FROM subjects WHERE subject = $1")
                .bind(subject)
                .fetch_optional(&mut *tx)
                .await
                .map_err(store_err)?;
        let version = version.unwrap_or(0);
        if bump_version {
            log_revocation(&mut tx, "subject", subject, version, now).await?;
        }
        tx.commit().await.map_err(store_err)?;
        conn.ended();
        Ok((to_u64(version, "subject version")?, families))
    }

    async fn is_revoked(&self, q: &RevocationQuery<'_>, now: UnixTime) -> Result<bool> {
        let n: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1 AND expires_at >= $2) \
                  + (SELECT COUNT(*) FROM families WHERE family_id = $3 AND revoked_at IS NOT NULL) \
                  + (SELECT COUNT(*) FROM subjects WHERE subject = $4 AND version > $5) \
                  + (SELECT COUNT(*) FROM signing_keys WHERE kid = $6 AND state = 'compromised')",
        )
        .bind(q.jti)
        .bind(now)
        .bind(q.family_id.unwrap_or(""))
        .bind(q.subject)
        .bind(to_i64(q.subject_version))
        .bind(q.kid)
        .fetch_one(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(n > 0)
    }

    async fn in_force(
        &self,
        now: UnixTime,
        family_margin: i64,
        apply: &(dyn for<'e> Fn(&'e RevocationEvent) + Send + Sync),
    ) -> Result<u64> {
        let mut n = 0;
        let mut jtis =
            sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= $1")
                .bind(now)
                .fetch(&self.pool);
        while let Some(row) = jtis.next().await.transpose().map_err(store_err)? {
            apply(&RevocationEvent::Jti {
                jti: row.try_get(0).map_err(store_err)?,
                until: row.try_get(1).map_err(store_err)?,
            });
            n += 1;
        }
        drop(jtis);
        // No token is minted for a family after its revocation, so its entry
        // matters until revoked_at plus the longest access-token life.
        let mut families = sqlx::query(
            "SELECT family_id, revoked_at FROM families \
             WHERE revoked_at IS NOT NULL AND revoked_at >= $1",
        )
        .bind(now - family_margin)
        .fetch(&self.pool);
        while let Some(row) = families.next().await.transpose().map_err(store_err)? {
            let revoked_at: i64 = row.try_get(1).map_err(store_err)?;
            apply(&RevocationEvent::Family {
                family_id: row.try_get(0).map_err(store_err)?,
                until: revoked_at + family_margin,
            });
            n += 1;
        }
        drop(families);
        let mut subjects = sqlx::query("SELECT subject, version FROM subjects WHERE version > 0")
            .fetch(&self.pool);
        while let Some(row) = subjects.next().await.transpose().map_err(store_err)? {
            let v: i64 = row.try_get(1).map_err(store_err)?;
            apply(&RevocationEvent::Subject {
                subject: row.try_get(0).map_err(store_err)?,
                min_version: to_u64(v, "subject version")?,
            });
            n += 1;
        }
        drop(subjects);
        let mut keys = sqlx::query("SELECT kid FROM signing_keys WHERE state = 'compromised'")
            .fetch(&self.pool);
        while let Some(row) = keys.next().await.transpose().map_err(store_err)? {
            apply(&RevocationEvent::Key {
                kid: row.try_get(0).map_err(store_err)?,
            });
            n += 1;
        }
        Ok(n)
    }
}

#[async_trait]
impl Housekeeping for SqlStore {
    async fn purge(&self, now: UnixTime, family_margin: i64, batch: i64) -> Result<u64> {
        let cutoff = now - family_margin;
        // Families whose refresh tokens can no longer work and whose `sid`
        // no longer needs denying, with their refresh tokens.
        let families = "SELECT family_id FROM families \
             WHERE (revoked_at IS NULL AND idle_expires_at < $1) OR revoked_at < $2 \
             ORDER BY family_id LIMIT $3";
        // One statement: refresh tokens go with their family (ON DELETE
        // CASCADE), so no second statement can pick a different batch.
        let mut total = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM families WHERE family_id IN ({families})"
        )))
        .bind(cutoff)
        .bind(cutoff)
        .bind(batch)
        .execute(&self.pool)
        .await
        .map_err(store_err)?
        .rows_affected();
        let log_cutoff = now - REVOCATION_LOG_RETENTION;
        for (sql, cutoff) in [
            (
                "DELETE FROM revoked_tokens WHERE jti IN \
                 (SELECT jti FROM revoked_tokens WHERE expires_at < $1 LIMIT $2)",
                cutoff,
            ),
            (
                "DELETE FROM purpose_tokens WHERE jti IN \
                 (SELECT jti FROM purpose_tokens WHERE expires_at < $1 LIMIT $2)",
                cutoff,
            ),
            (
                "DELETE FROM revocation_log WHERE id IN \
                 (SELECT id FROM revocation_log WHERE recorded_at < $1 LIMIT $2)",
                log_cutoff,
            ),
        ] {
            total += sqlx::query(sql)
                .bind(cutoff)
                .bind(batch)
                .execute(&self.pool)
                .await
                .map_err(store_err)?
                .rows_affected();
        }
        Ok(total)
    }
}
