//! The `tessera` binary's library: configuration, wiring and serving.
//!
//! [`Application::build`] binds the listener and opens every store (port 0
//! in tests; the real address is [`Application::local_addr`]);
//! [`Application::run`] serves until the shutdown future resolves.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod audit_log;
pub mod callers_cli;
mod checks;
pub mod cli;
mod config;
mod edge;
mod gateway;
mod health;
pub mod http;
pub mod inspect_cli;
pub mod issuer_file;
pub mod kek;
pub mod keys_cli;
mod readiness;
pub mod remote;
pub mod revoke_cli;
mod roles;
mod tasks;
pub mod telemetry;
mod topology;

pub use app::Application;
pub use config::{AppError, Config, Edge, Role};

/// Makes aws-lc-rs the process's rustls crypto provider; call once, first
/// thing in `main` (and in test setup). redis-rs builds its TLS client
/// configuration from the process default, and rustls panics at the first
/// `rediss://` connection if it cannot pick one (two providers compiled in,
/// e.g. ring pulled in by a dependency's default features). sqlx names
/// aws-lc-rs explicitly. A second call (or a provider already installed by
/// the embedding program) changes nothing.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
