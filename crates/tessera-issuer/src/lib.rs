//! The issuer service: `IssuerService` (Issue, Refresh, purpose tokens) and
//! `KeyService` (JWKS and the key lifecycle).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod issuer;
mod keys;

pub use issuer::IssuerApi;
pub use keys::{KeyApi, KeyManager};
