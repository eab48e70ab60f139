//! The durable store on Postgres or SQLite.
//!
//! Both engines take the same SQL: `$N` placeholders (sqlx binds `$N` by
//! number on SQLite too), BIGINT seconds for time, `ON CONFLICT` upserts.
//! Where they must differ the [`Backend`] says so: the migrations, and how
//! a writing transaction locks. On SQLite it takes the database's write lock
//! when it begins (`tx::TxConn::begin`); on Postgres `rotate` and
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
mod log;
mod revocations;
pub use revocations::REVOCATION_LOG_RETENTION;
mod sessions;
mod turns;
mod tx;

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

/// Server-side time bounds of every Postgres session, set when each pooled
/// connection opens (`SET` after connect): a statement, a lock wait, or a
/// transaction left idle (its client gone) never holds a connection or a
/// row lock for longer. They keep a store call far shorter than the refresh
/// grace window and the revocation log's reconcile bounds. SQLite (one
/// process, one writer) waits at most its busy timeout (5 s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTimeouts {
    /// `statement_timeout`: the longest one statement runs, lock waits
    /// included.
    pub statement: Duration,
    /// `lock_timeout`: the longest a statement waits for a row lock (a hot
    /// family answers fast instead of queueing the pool behind it).
    pub lock: Duration,
    /// `idle_in_transaction_session_timeout`: a session idle inside a
    /// transaction this long is ended by the server (its locks released).
    pub idle_in_transaction: Duration,
}

impl Default for StoreTimeouts {
    fn default() -> Self {
        Self {
            statement: Duration::from_millis(2000),
            lock: Duration::from_millis(1000),
            idle_in_transaction: Duration::from_millis(5000),
        }
    }
}

impl StoreTimeouts {
    /// The `SET` statements of a new session (whole milliseconds; none is
    /// ever 0, which Postgres reads as "no bound").
    fn session_sql(&self) -> String {
        let ms = |d: Duration| d.as_millis().max(1);
        format!(
            "SET statement_timeout = {}; SET lock_timeout = {}; SET idle_in_transaction_session_timeout = {}",
            ms(self.statement),
            ms(self.lock),
            ms(self.idle_in_transaction)
        )
    }
}

/// The durable store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// Calls on one token, one at a time (see `tx::OneAtATime`).
    turns: std::sync::Arc<turns::OneAtATime>,
    /// How long a call waits for its token's turn: the lock timeout.
    turn_wait: Duration,
    /// What the URL names (no password), for start-up errors.
    origin: connect::Origin,
}

/// The pool: its size, the session's time bounds (Postgres), and how long
/// a call waits for a connection.
fn pool_options(backend: Backend, timeouts: &StoreTimeouts) -> AnyPoolOptions {
    let max = match backend {
        Backend::Postgres => 16,
        // SQLite has one writer; a few readers in WAL mode.
        Backend::Sqlite => 4,
    };
    let session = timeouts.session_sql();
    AnyPoolOptions::new()
        .max_connections(max)
        .after_connect(move |conn, _| {
            let session = session.clone();
            Box::pin(async move {
                if backend == Backend::Postgres {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(session))
                        .execute(conn)
                        .await?;
                }
                Ok(())
            })
        })
        // A store that does not hand out a connection within 0.8 s is
        // down for this call: answer UNAVAILABLE fast, not at the
        // client's deadline (the pool's default waits 30 s).
        .acquire_timeout(Duration::from_millis(800))
}

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

impl SqlStore {
    /// Connects to `url` (no migration). The password in a URL never reaches
    /// an error message; errors name `database_url` and the URL without it.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_as(
            url,
            format!("database_url {}", redact_url(url)),
            StoreTimeouts::default(),
        )
        .await
    }

    /// [`SqlStore::connect`], with errors (of connecting and migrating)
    /// naming `label` instead, e.g. `data_dir /var/lib/tessera` for the
    /// embedded store. `label` must hold no secret.
    pub async fn connect_as(url: &str, label: String, timeouts: StoreTimeouts) -> Result<Self> {
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
        if backend == Backend::Sqlite {
            connect::create_private(&url);
        }
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
        let pool = pool_options(backend, &timeouts)
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
            turns: std::sync::Arc::default(),
            turn_wait: timeouts.lock,
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
        Ok(self.pending_migrations().await?.is_empty())
    }

    /// The versions of this binary's migrations not applied yet.
    pub async fn pending_migrations(&self) -> Result<Vec<i64>> {
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
        let applied: Vec<i64> = if tables == 0 {
            Vec::new()
        } else {
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success = true")
                .fetch_all(&self.pool)
                .await
                .map_err(store_err)?
        };
        Ok(migrator
            .iter()
            .map(|m| m.version)
            .filter(|v| !applied.contains(v))
            .collect())
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

/// A BIGINT column for a u64, checked: a negative stored value is a broken
/// row, refused (an error), never read as 0, which for a subject's version
/// or a count would be the permissive answer.
pub(crate) fn to_u64(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| DomainError::Internal(format!("a stored {what} is negative")))
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
