//! The domain's one error enum. Expected outcomes are variants; the edge maps
//! each to a gRPC status once.

use thiserror::Error;

/// Everything that can go wrong in the domain and its stores.
#[derive(Debug, Error)]
pub enum DomainError {
    /// A command field is missing or out of range. `field` is the request
    /// field's name as the caller sent it.
    #[error("invalid field `{field}`: {reason}")]
    InvalidField {
        /// The request field.
        field: &'static str,
        /// Why it is invalid; safe to show the caller (never echoes a token).
        reason: String,
    },
    /// No key can sign right now.
    #[error("no active signing key")]
    NoSigningKey,
    /// The key-encryption key could not open a sealed key (wrong KEK or
    /// tampered ciphertext).
    #[error("a sealed key could not be opened with the configured key-encryption key")]
    Unseal,
    /// Key material could not be parsed or generated.
    #[error("key material error: {0}")]
    KeyMaterial(String),
    /// The store could not be reached or failed. The message is for the log
    /// only and carries no SQL text.
    #[error("store unavailable: {0}")]
    StoreUnavailable(String),
    /// An invariant broke; for the log only.
    #[error("internal error: {0}")]
    Internal(String),
}

impl DomainError {
    /// Shorthand for [`DomainError::InvalidField`].
    pub fn field(field: &'static str, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field,
            reason: reason.into(),
        }
    }
}

/// The domain's result type.
pub type Result<T, E = DomainError> = std::result::Result<T, E>;
