//! A writing transaction whose connection is never returned dirty.
//!
//! A call can be cancelled at any `.await` (the client went away, a
//! deadline passed, the server shut down). sqlx-postgres 0.9.0 guards a
//! transaction only once `BEGIN` has completed: a future dropped while
//! `BEGIN` is in flight leaves no `Transaction` to roll back, and the
//! connection goes back to the pool inside an open transaction, where the
//! next caller's writes (autocommit statements included) are never
//! committed. Tessera's answer has two parts:
//!
//! 1. the edge runs every call to completion in a task of its own
//!    (`tessera_edge::deadline`), so a client's cancellation or deadline
//!    never drops a store call half-way;
//! 2. here, the connection of a writing transaction is closed, not pooled,
//!    unless the transaction was seen to end (COMMIT or ROLLBACK
//!    acknowledged). Closing it makes the server roll back whatever was
//!    open; a COMMIT it already received still commits, which is why a
//!    write interrupted there has an *unknown* outcome, never a false one.
//!
//! Postgres' `idle_in_transaction_session_timeout` (set at connect, see
//! `connect`) is the third line: a session left open in a transaction by
//! anything else is ended by the server.

use super::error::store_err;
use super::{Backend, SqlStore};
use sqlx::Connection as _;
use sqlx::pool::PoolConnection;
use tessera_domain::error::Result;

/// One pooled connection, checked out for one writing transaction.
pub(crate) struct TxConn {
    conn: PoolConnection<sqlx::Any>,
    backend: Backend,
    ended: bool,
}

impl SqlStore {
    /// A connection for a writing transaction (see [`TxConn::begin`]).
    pub(crate) async fn write_conn(&self) -> Result<TxConn> {
        Ok(TxConn {
            conn: self.pool.acquire().await.map_err(store_err)?,
            backend: self.backend,
            ended: false,
        })
    }
}

impl TxConn {
    /// Begins the transaction. On SQLite it takes the database's write lock
    /// at once (`BEGIN IMMEDIATE`), so it never has to upgrade a read
    /// snapshot (WAL mode refuses that with SQLITE_BUSY_SNAPSHOT instead of
    /// waiting); on Postgres a plain `BEGIN`, rows locked as they are read.
    /// A call whose deadline has already passed does not begin.
    pub(crate) async fn begin(&mut self) -> Result<sqlx::Transaction<'_, sqlx::Any>> {
        if tessera_domain::deadline::passed() {
            // Still waiting to begin when its client was answered: it does
            // not begin at all (see `tessera_domain::deadline`).
            return Err(tessera_domain::error::DomainError::StoreUnavailable(
                "the call's deadline passed before its transaction began; nothing was done".into(),
            ));
        }
        match self.backend {
            Backend::Sqlite => self.conn.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.conn.begin().await,
        }
        .map_err(store_err)
    }

    /// The transaction was committed or rolled back, acknowledged by the
    /// server: the connection may go back to the pool.
    pub(crate) fn ended(&mut self) {
        self.ended = true;
    }
}

impl Drop for TxConn {
    fn drop(&mut self) {
        if !self.ended {
            // Its state is unknown: BEGIN, a statement or COMMIT was cut off
            // or failed. Closed (the server rolls back what is open), never
            // handed to the next caller.
            self.conn.close_on_drop();
        }
    }
}
