//! The issuer service: `IssuerService` (Issue, Refresh, purpose tokens) and
//! `KeyService` (JWKS and the key lifecycle).

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

mod issuer;
mod key_api;
mod keys;
mod purpose;
mod refresh;

pub use issuer::{IssuerApi, IssuerConfig};
pub use key_api::KeyApi;
pub use keys::{JwksDocument, KeyManager, REFRESH_SECRET, rewrap};
