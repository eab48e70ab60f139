//! The `tessera` binary's library: configuration, wiring and serving.
//!
//! [`Application::build`] binds the listener and opens every store (port 0
//! in tests; the real address is [`Application::local_addr`]);
//! [`Application::run`] serves until the shutdown future resolves.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod app;
pub mod callers_cli;
pub mod cli;
mod config;
mod edge;
pub mod http;
pub mod kek;
pub mod keys_cli;
mod roles;
mod tasks;

pub use app::Application;
pub use config::{AppError, Config, Edge, Role};
