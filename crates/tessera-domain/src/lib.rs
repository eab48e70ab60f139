//! Tessera's domain: what a token is, how it is minted and how it is verified.
//!
//! This crate knows no transport and no storage engine (CI checks that tonic,
//! prost, sqlx and redis are not in its dependency tree). It defines the
//! storage *traits* the storage crate implements, and takes time and the key
//! set as inputs so every rule is testable to the second.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod callers;
pub mod claims;
pub mod clock;
pub mod deadline;
pub mod error;
pub mod gateway;
pub mod issue;
pub mod keys;
pub mod kind;
pub mod policy;
pub mod purpose;
pub mod reconcile;
pub mod reconnect;
pub mod refresh;
pub mod revocation;
pub mod schedule;
pub mod seal;
pub mod sigcache;
pub mod store;
pub mod text;
pub mod verify;

mod b64;
mod secret;

pub use b64::{b64_standard_decode, b64url_decode, b64url_encode, b64url_encode_into};
pub use secret::{Secret, random_bytes, random_id, sha256};
