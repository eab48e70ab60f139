//! The durable store on Postgres or SQLite.
//!
//! Both engines take the same SQL: `$N` placeholders (sqlx binds `$N` by
//! number on SQLite too), BIGINT seconds for time, `ON CONFLICT` upserts.
//! Where they must differ (migrations, row locks) the [`Backend`] says so.

use async_trait::async_trait;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;
use tessera_domain::clock::UnixTime;
use tessera_domain::error::{DomainError, Result};
use tessera_domain::keys::{Algorithm, KeyState};
use tessera_domain::revocation::{RevocationEvent, RevocationQuery};
use tessera_domain::store::{KeyStore, NewFamily, Ping, RevocationStore, SessionStore, StoredKey};

/// Which engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `sqlite:`.
    Sqlite,
}

impl Backend {
    /// The engine of `url`, or an error naming the setting.
    pub fn of(url: &str) -> Result<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else {
            Err(DomainError::field(
                "database_url",
                "must start with postgres://, postgresql:// or sqlite:",
            ))
        }
    }
}

/// Turns a sqlx error into a message with no SQL and no bound values.
pub(crate) fn store_err(e: sqlx::Error) -> DomainError {
    let what = match &e {
        sqlx::Error::Database(db) => format!(
            "database error (code {})",
            db.code().as_deref().unwrap_or("unknown")
        ),
        sqlx::Error::PoolTimedOut => "connection pool timed out".to_owned(),
        sqlx::Error::PoolClosed => "connection pool closed".to_owned(),
        sqlx::Error::Io(io) => format!("i/o error ({:?})", io.kind()),
        sqlx::Error::Tls(_) => "tls error".to_owned(),
        sqlx::Error::Protocol(_) => "protocol error".to_owned(),
        sqlx::Error::RowNotFound => "row not found".to_owned(),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode error".to_owned(),
        sqlx::Error::Migrate(_) => "migration failed".to_owned(),
        _ => "database error".to_owned(),
    };
    DomainError::StoreUnavailable(what)
}

/// The durable store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl SqlStore {
    /// Connects to `url` (no migration). The password in a URL never reaches
    /// an error message.
    pub async fn connect(url: &str) -> Result<Self> {
        let backend = Backend::of(url)?;
        sqlx::any::install_default_drivers();
        let url = match backend {
            // Create the file on first start.
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_owned(),
        };
        let max = match backend {
            Backend::Postgres => 16,
            // SQLite has one writer; a few readers in WAL mode.
            Backend::Sqlite => 4,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .map_err(store_err)?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; it persists in the file.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(store_err)?;
        }
        Ok(Self { pool, backend })
    }

    /// Applies the migrations under `migrations/<backend>`.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        migrator.run(&self.pool).await.map_err(|e| {
            tracing::error!(error = %e, "migration failed");
            DomainError::StoreUnavailable("migration failed".into())
        })
    }

    /// The engine in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn key_from_row(row: &AnyRow) -> Result<StoredKey> {
    let get_s = |c: &str| row.try_get::<String, _>(c).map_err(store_err);
    let alg = get_s("algorithm")?;
    let state = get_s("state")?;
    Ok(StoredKey {
        kid: get_s("kid")?,
        algorithm: Algorithm::from_name(&alg)
            .ok_or_else(|| DomainError::Internal("stored key has an unknown algorithm".into()))?,
        state: KeyState::parse(&state)
            .ok_or_else(|| DomainError::Internal("stored key has an unknown state".into()))?,
        public_jwk: get_s("public_jwk")?,
        sealed_private: row.try_get("sealed_private").map_err(store_err)?,
        kek_id: get_s("kek_id")?,
        created_at: row.try_get("created_at").map_err(store_err)?,
        activated_at: row.try_get("activated_at").map_err(store_err)?,
    })
}

#[async_trait]
impl KeyStore for SqlStore {
    async fn load_keys(&self) -> Result<Vec<StoredKey>> {
        let rows = sqlx::query(
            "SELECT kid, algorithm, state, public_jwk, sealed_private, kek_id, created_at, activated_at \
             FROM signing_keys ORDER BY created_at DESC, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn insert_key(&self, k: &StoredKey) -> Result<()> {
        // DO NOTHING also covers the one-active-key index: a racing instance
        // that created the first key wins, and the caller re-reads.
        sqlx::query(
            "INSERT INTO signing_keys (kid, algorithm, state, public_jwk, sealed_private, kek_id, created_at, activated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
        )
        .bind(&k.kid)
        .bind(k.algorithm.name())
        .bind(k.state.as_str())
        .bind(&k.public_jwk)
        .bind(&k.sealed_private)
        .bind(&k.kek_id)
        .bind(k.created_at)
        .bind(k.activated_at)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn subject_version(&self, subject: &str) -> Result<u64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT version FROM subjects WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    async fn open_family(&self, f: &NewFamily) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(store_err)?;
        sqlx::query(
            "INSERT INTO families (family_id, subject, audience, scope, client_id, created_at, last_used_at, idle_expires_at, absolute_expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl RevocationStore for SqlStore {
    async fn record(&self, event: &RevocationEvent, now: UnixTime) -> Result<bool> {
        let q = match event {
            RevocationEvent::Jti { jti, until } => sqlx::query(
                "INSERT INTO revoked_tokens (jti, expires_at, revoked_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti.clone())
            .bind(*until)
            .bind(now),
            RevocationEvent::Family { family_id, .. } => sqlx::query(
                "UPDATE families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(family_id.clone()),
            RevocationEvent::Subject {
                subject,
                min_version,
            } => sqlx::query(
                "INSERT INTO subjects (subject, version) VALUES ($1, $2) \
                 ON CONFLICT (subject) DO UPDATE SET version = excluded.version \
                 WHERE subjects.version < excluded.version",
            )
            .bind(subject.clone())
            .bind(to_i64(*min_version)),
            RevocationEvent::Key { kid } => sqlx::query(
                "UPDATE signing_keys SET state = 'compromised' WHERE kid = $1 AND state <> 'compromised'",
            )
            .bind(kid.clone()),
        };
        let done = q.execute(&self.pool).await.map_err(store_err)?;
        Ok(done.rows_affected() > 0)
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

    async fn in_force(&self, now: UnixTime) -> Result<Vec<RevocationEvent>> {
        let mut out = Vec::new();
        for row in sqlx::query("SELECT jti, expires_at FROM revoked_tokens WHERE expires_at >= $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?
        {
            out.push(RevocationEvent::Jti {
                jti: row.try_get(0).map_err(store_err)?,
                until: row.try_get(1).map_err(store_err)?,
            });
        }
        for row in sqlx::query(
            "SELECT family_id, absolute_expires_at FROM families \
             WHERE revoked_at IS NOT NULL AND absolute_expires_at >= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)?
        {
            out.push(RevocationEvent::Family {
                family_id: row.try_get(0).map_err(store_err)?,
                until: row.try_get(1).map_err(store_err)?,
            });
        }
        for row in sqlx::query("SELECT subject, version FROM subjects WHERE version > 0")
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?
        {
            let v: i64 = row.try_get(1).map_err(store_err)?;
            out.push(RevocationEvent::Subject {
                subject: row.try_get(0).map_err(store_err)?,
                min_version: u64::try_from(v).unwrap_or(0),
            });
        }
        for row in sqlx::query("SELECT kid FROM signing_keys WHERE state = 'compromised'")
            .fetch_all(&self.pool)
            .await
            .map_err(store_err)?
        {
            out.push(RevocationEvent::Key {
                kid: row.try_get(0).map_err(store_err)?,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl Ping for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(store_err)?;
        Ok(())
    }
}
