//! Store errors as they leave the crate: a message safe for a log line (an
//! error code or kind, never SQL text or a bound value). Start-up failures
//! say more, in `connect`.

use tessera_domain::error::DomainError;

/// Turns a sqlx error into a message with no SQL and no bound values.
pub(super) fn store_err(e: sqlx::Error) -> DomainError {
    store_err_ref(&e)
}

/// [`store_err`] of a borrowed error.
pub(super) fn store_err_ref(e: &sqlx::Error) -> DomainError {
    let what = match e {
        sqlx::Error::Database(db) => format!(
            "database error (code {})",
            db.code().as_deref().unwrap_or("unknown")
        ),
        sqlx::Error::PoolTimedOut => "connection pool timed out".to_owned(),
        sqlx::Error::PoolClosed => "connection pool closed".to_owned(),
        sqlx::Error::Io(io) => match crate::tls::failure(io) {
            Some(t) => format!("tls error ({t})"),
            None => format!("i/o error ({:?})", io.kind()),
        },
        sqlx::Error::Tls(_) => "tls error".to_owned(),
        sqlx::Error::Protocol(_) => "protocol error".to_owned(),
        sqlx::Error::RowNotFound => "row not found".to_owned(),
        sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) => "decode error".to_owned(),
        sqlx::Error::Migrate(_) => "migration failed".to_owned(),
        _ => "database error".to_owned(),
    };
    DomainError::StoreUnavailable(what)
}
