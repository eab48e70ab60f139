//! The issuer service: `IssuerService` (Issue, Refresh, purpose tokens) and
//! `KeyService` (JWKS and the key lifecycle).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod issue;
mod issuer;
mod jwks;
mod key_api;
mod keys;
mod purpose;
mod refresh;
mod rewrap;
mod state;

pub use issuer::IssuerApi;
pub use jwks::JwksDocument;
pub use key_api::KeyApi;
pub use keys::KeyManager;
pub use rewrap::{REFRESH_SECRET, rewrap};
pub use state::IssuerConfig;
