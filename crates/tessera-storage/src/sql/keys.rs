//! Signing keys: load, and change under the key lock (the schedule, a
//! rotation, a kill, a rewrap).

use super::error::store_err;
use super::{SqlStore, log_revocation, to_u64};
use async_trait::async_trait;
use sqlx::Row;
use sqlx::any::AnyRow;
use tessera_domain::clock::UnixTime;
use tessera_domain::error::{DomainError, Result};
use tessera_domain::keys::{Algorithm, KeyState};
use tessera_domain::store::{KeyPlan, KeyStore, StoredKey};

const COLUMNS: &str = "kid, algorithm, state, public_jwk, sealed_private, kek_id, created_at, \
                       activates_at, activated_at, retiring_at, retired_at";

fn key_from_row(row: &AnyRow) -> Result<StoredKey> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(store_err);
    let int = |c: &str| row.try_get::<Option<i64>, _>(c).map_err(store_err);
    Ok(StoredKey {
        kid: text("kid")?,
        algorithm: Algorithm::from_name(&text("algorithm")?)
            .ok_or_else(|| DomainError::Internal("stored key has an unknown algorithm".into()))?,
        state: KeyState::parse(&text("state")?)
            .ok_or_else(|| DomainError::Internal("stored key has an unknown state".into()))?,
        public_jwk: text("public_jwk")?,
        sealed_private: row.try_get("sealed_private").map_err(store_err)?,
        kek_id: text("kek_id")?,
        created_at: row.try_get("created_at").map_err(store_err)?,
        activates_at: int("activates_at")?,
        activated_at: int("activated_at")?,
        retiring_at: int("retiring_at")?,
        retired_at: int("retired_at")?,
    })
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn load_keys(&self) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn change_keys(&self, plan: &KeyPlan<'_>) -> Result<Vec<StoredKey>> {
        let mut conn = self.write_conn().await?;
        let mut tx = conn.begin().await?;
        // The key lock: a write before any read, so the keys below are read
        // under it (a row lock on Postgres; on SQLite the write takes the
        // database's write lock before any snapshot is read).
        sqlx::query("UPDATE leases SET counter = counter + 1 WHERE name = 'signing_keys'")
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid"
        )))
        .fetch_all(&mut *tx)
        .await
        .map_err(store_err)?;
        let keys = rows.iter().map(key_from_row).collect::<Result<Vec<_>>>()?;
        let changes = plan(&keys)?;
        for k in &changes {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO signing_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (kid) DO UPDATE SET state = excluded.state, \
                 activates_at = excluded.activates_at, activated_at = excluded.activated_at, \
                 retiring_at = excluded.retiring_at, retired_at = excluded.retired_at, \
                 sealed_private = excluded.sealed_private, kek_id = excluded.kek_id \
                 WHERE signing_keys.state <> 'compromised' OR excluded.state = 'compromised'"
            )))
            .bind(&k.kid)
            .bind(k.algorithm.name())
            .bind(k.state.as_str())
            .bind(&k.public_jwk)
            .bind(&k.sealed_private)
            .bind(&k.kek_id)
            .bind(k.created_at)
            .bind(k.activates_at)
            .bind(k.activated_at)
            .bind(k.retiring_at)
            .bind(k.retired_at)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
            if k.state == KeyState::Compromised {
                let now = k.retired_at.unwrap_or(k.created_at);
                log_revocation(&mut tx, "key", &k.kid, 0, now).await?;
            }
        }
        tx.commit().await.map_err(store_err)?;
        conn.ended();
        Ok(changes)
    }

    async fn load_secret(&self, name: &str) -> Result<Option<(Vec<u8>, String)>> {
        let row = sqlx::query("SELECT sealed, kek_id FROM secrets WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        row.map(|r| {
            Ok((
                r.try_get(0).map_err(store_err)?,
                r.try_get(1).map_err(store_err)?,
            ))
        })
        .transpose()
    }

    async fn store_secret(
        &self,
        name: &str,
        sealed: &[u8],
        kek_id: &str,
        replace: bool,
    ) -> Result<()> {
        let sql = if replace {
            "INSERT INTO secrets (name, sealed, kek_id) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET sealed = excluded.sealed, kek_id = excluded.kek_id"
        } else {
            "INSERT INTO secrets (name, sealed, kek_id) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING"
        };
        sqlx::query(sql)
            .bind(name)
            .bind(sealed.to_vec())
            .bind(kek_id)
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }

    async fn sessions_used_since(&self, since: UnixTime) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM families WHERE last_used_at >= $1 AND revoked_at IS NULL",
        )
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(store_err)?;
        to_u64(n, "session count")
    }
}
