//! The durable store on Postgres or SQLite.
//!
//! Both engines take the same SQL: `$N` placeholders (sqlx binds `$N` by
//! number on SQLite too), BIGINT seconds for time, `ON CONFLICT` upserts.
//! Where they must differ the [`Backend`] says so: the migrations, and how
//! a writing transaction locks. On SQLite it takes the database's write lock
//! when it begins ([`SqlStore::begin_write`]); on Postgres `rotate` and
//! `redeem_purpose` lock the family's or the token's row with
//! `SELECT … FOR UPDATE` before reading it. The key lock and the revocations
//! lock with an UPDATE, which locks on both engines.

use async_trait::async_trait;
use sqlx::AnyPool;
use sqlx::ConnectOptions;
use sqlx::any::AnyPoolOptions;
use std::str::FromStr;
use std::time::Duration;
use tessera_domain::error::{DomainError, Result};
use tessera_domain::store::Ping;

mod connect;
pub use connect::redact_url;
mod error;
use error::store_err;
mod keys;
mod revocations;
pub use revocations::REVOCATION_LOG_RETENTION;
mod sessions;

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

/// The durable store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// What the URL names (no password), for start-up errors.
    origin: connect::Origin,
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl SqlStore {
    /// Connects to `url` (no migration). The password in a URL never reaches
    /// an error message; errors name `database_url` and the URL without it.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_as(url, format!("database_url {}", redact_url(url))).await
    }

    /// [`SqlStore::connect`], with errors (of connecting and migrating)
    /// naming `label` instead, e.g. `data_dir /var/lib/tessera` for the
    /// embedded store. `label` must hold no secret.
    pub async fn connect_as(url: &str, label: String) -> Result<Self> {
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
        // sqlx logs statements (and slow ones at WARN) with their SQL text
        // and bind summary; no log line of ours may carry SQL, so both are off.
        // `sslmode`, `sslrootcert`, `sslcert` and `sslkey` in a Postgres URL
        // choose TLS (rustls with aws-lc-rs), as with libpq.
        let options = sqlx::any::AnyConnectOptions::from_str(&url)
            .map_err(|_| {
                DomainError::StoreUnavailable(format!("{label}: the URL's options were refused"))
            })?
            .disable_statement_logging();
        let origin = connect::Origin::of(&options, label);
        connect::first_connection(&options, &origin).await?;
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            // A store that does not hand out a connection within 0.8 s is
            // down for this call: answer UNAVAILABLE fast, not at the
            // client's deadline (the pool's default waits 30 s).
            .acquire_timeout(Duration::from_millis(800))
            .connect_with(options)
            .await
            .map_err(|e| connect::connect_err(&e, &origin))?;
        if backend == Backend::Sqlite {
            // WAL lets readers run beside the writer; it persists in the file.
            // A read-only directory fails here (WAL needs its side files).
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await
                .map_err(|e| connect::connect_err(&e, &origin))?;
        }
        Ok(Self {
            pool,
            backend,
            origin,
        })
    }

    /// Applies the migrations under `migrations/<backend>`.
    pub async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        // The error is returned, not also logged: the binary prints it once.
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| connect::migrate_err(&e, &self.origin))
    }

    /// True when every migration of this binary has been applied.
    pub async fn is_migrated(&self) -> Result<bool> {
        let migrator = match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        // Whether the migrations table exists is asked, not inferred from an
        // error: a permission or connection failure is a store error, not
        // "not migrated".
        let exists = match self.backend {
            Backend::Postgres => {
                "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_catalog.pg_tables \
                 WHERE tablename = '_sqlx_migrations' AND schemaname = ANY(current_schemas(false))"
            }
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
        };
        let tables: i64 = sqlx::query_scalar(exists)
            .fetch_one(&self.pool)
            .await
            .map_err(store_err)?;
        if tables == 0 {
            return Ok(false);
        }
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = true")
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?;
        Ok(migrator.iter().all(|m| applied.contains(&m.version)))
    }

    /// A transaction that will write: on SQLite it takes the database's
    /// write lock at once (`BEGIN IMMEDIATE`), so it never has to upgrade a
    /// read snapshot (WAL mode refuses that with SQLITE_BUSY_SNAPSHOT instead
    /// of waiting); on Postgres a plain `BEGIN`, rows locked as they are read.
    pub(crate) async fn begin_write(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
        .map_err(store_err)
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

/// A u64 for a BIGINT column.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A BIGINT column for a u64.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Appends one revocation to `revocation_log` inside `tx` (see the
/// migration): the reconcile's cursor follows these ids.
pub(crate) async fn log_revocation(
    tx: &mut sqlx::AnyConnection,
    kind: &str,
    target: &str,
    value: i64,
    now: tessera_domain::clock::UnixTime,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO revocation_log (kind, target, value, recorded_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(kind)
    .bind(target)
    .bind(value)
    .bind(now)
    .execute(tx)
    .await
    .map_err(store_err)?;
    Ok(())
}
