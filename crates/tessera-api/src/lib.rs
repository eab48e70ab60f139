//! The API mapping shared by the issuer and introspection services: what
//! a request means and what an answer says, with no transport of its own.
//!
//! - Domain errors become a `tonic::Status` here and nowhere else
//!   ([`from_domain`]).
//! - Requests become domain commands ([`requests`]), the first step of
//!   every handler.
//! - The ports between the two services ([`ports`]) and the client side of
//!   their calls ([`client`]).
//! - Who the caller of a request is, as the edge authenticated it
//!   ([`caller`]).
//!
//! Domain errors become a `tonic::Status` here and nowhere else. Every status
//! carries exactly one `google.rpc.ErrorInfo` whose reason is an
//! `ErrorReason` value name from the contract; bad input also carries a
//! `google.rpc.BadRequest` naming the field. Unexpected errors are logged
//! with their cause and leave as a bare INTERNAL.

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use tessera_domain::clock::UnixTime;
use tessera_domain::error::DomainError;
use tessera_domain::kind::TokenKind;
use tessera_proto::v1::{self, ErrorReason};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

pub mod caller;
pub mod client;
mod convert;
pub mod ports;
pub mod requests;
pub use convert::{duration_secs, json_to_struct, parse_time, struct_to_json};

/// The `domain` of every ErrorInfo Tessera sends.
pub const ERROR_DOMAIN: &str = "tessera.dev";

/// A status with `code`, a caller-safe `message` and an ErrorInfo of `reason`.
pub fn status(code: Code, reason: ErrorReason, message: impl Into<String>) -> Status {
    let details = ErrorDetails::with_error_info(
        reason.as_str_name(),
        ERROR_DOMAIN,
        std::collections::HashMap::new(),
    );
    Status::with_error_details(code, message, details)
}

/// INVALID_ARGUMENT naming `field`, with a BadRequest field violation.
pub fn invalid(field: &str, description: impl Into<String>) -> Status {
    let description = description.into();
    let mut details = ErrorDetails::with_bad_request_violation(field, description.clone());
    details.set_error_info(
        ErrorReason::FieldInvalid.as_str_name(),
        ERROR_DOMAIN,
        std::collections::HashMap::new(),
    );
    Status::with_error_details(
        Code::InvalidArgument,
        format!("invalid `{field}`: {description}"),
        details,
    )
}

/// Maps a domain error to its status: the one place this happens.
pub fn from_domain(e: DomainError) -> Status {
    match e {
        DomainError::InvalidField { field, reason } => invalid(field, reason),
        DomainError::NoSigningKey => status(
            Code::Unavailable,
            ErrorReason::NoSigningKey,
            "no signing key is active",
        ),
        DomainError::StoreUnavailable(cause) => {
            tracing::error!(%cause, "store unavailable");
            status(
                Code::Unavailable,
                ErrorReason::StoreUnavailable,
                "the store is unavailable; retry later",
            )
        }
        e @ (DomainError::Unseal | DomainError::KeyMaterial(_) | DomainError::Internal(_)) => {
            tracing::error!(error = %e, "internal error");
            status(Code::Internal, ErrorReason::Internal, "internal error")
        }
    }
}

/// A required enum field: unknown numbers and `*_UNSPECIFIED` (0) are
/// INVALID_ARGUMENT naming the field.
pub fn required_enum<E>(field: &str, value: i32) -> Result<E, Status>
where
    E: TryFrom<i32>,
{
    if value == 0 {
        return Err(invalid(field, "is required (UNSPECIFIED is not a value)"));
    }
    E::try_from(value).map_err(|_| invalid(field, format!("{value} is not a known value")))
}

/// The domain kind of a contract kind.
pub fn token_kind(kind: v1::TokenKind) -> Option<TokenKind> {
    match kind {
        v1::TokenKind::Unspecified => None,
        v1::TokenKind::Access => Some(TokenKind::Access),
        v1::TokenKind::EmailVerification => Some(TokenKind::EmailVerification),
        v1::TokenKind::PasswordReset => Some(TokenKind::PasswordReset),
    }
}

/// A protobuf timestamp of whole seconds.
pub fn timestamp(t: UnixTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t,
        nanos: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_the_field_and_reason() {
        let s = invalid("token", "is required");
        assert_eq!(s.code(), Code::InvalidArgument);
        let d = s.get_error_details();
        let br = d.bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "token");
        assert_eq!(d.error_info().unwrap().reason, "ERROR_REASON_FIELD_INVALID");
    }

    #[test]
    fn enums_reject_unspecified_and_unknown() {
        assert!(required_enum::<v1::TokenKind>("k", 0).is_err());
        assert!(required_enum::<v1::TokenKind>("k", 99).is_err());
        assert_eq!(
            required_enum::<v1::TokenKind>("k", 1).unwrap(),
            v1::TokenKind::Access
        );
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let s = from_domain(DomainError::Internal("SELECT secret FROM x".into()));
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("SELECT"));
    }
}
