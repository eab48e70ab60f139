//! Storage for Tessera: the durable store (Postgres or SQLite through sqlx's
//! `Any` driver, one set of queries for both), the Redis deny-list and
//! revocation fan-out, and the in-process bus of the embedded mode. Both
//! network stores may be reached over TLS (rustls, aws-lc-rs): Postgres by
//! the URL's `sslmode`/`sslrootcert`, Redis by a `rediss://` URL and
//! [`RedisTls`].
//!
//! Errors leave this crate as [`tessera_domain::error::DomainError`] with a
//! message safe for a log line: an error code or kind, never SQL text or a
//! bound value.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod bus;
mod deny_list;
mod sql;
mod tls;

pub use bus::{LocalBus, RedisBus};
pub use sql::{Backend, REVOCATION_LOG_RETENTION, SqlStore, StoreTimeouts, redact_url};
pub use tls::RedisTls;
