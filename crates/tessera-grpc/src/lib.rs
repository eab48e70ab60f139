//! The gRPC edge shared by the issuer and introspection services.
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

/// UNIMPLEMENTED for an RPC that a later release implements.
pub fn unimplemented(rpc: &str) -> Status {
    status(
        Code::Unimplemented,
        ErrorReason::NotImplemented,
        format!("{rpc} is not implemented by this server yet"),
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

/// JSON of a protobuf `Struct` (numbers become JSON numbers; a whole number
/// stays an integer so `"n": 3` round-trips as 3, not 3.0).
pub fn struct_to_json(s: prost_types::Struct) -> serde_json::Map<String, serde_json::Value> {
    s.fields
        .into_iter()
        .map(|(k, v)| (k, value_to_json(v)))
        .collect()
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::NumberValue(n)) => {
            #[allow(clippy::cast_possible_truncation, clippy::float_cmp)]
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                J::from(n as i64)
            } else {
                serde_json::Number::from_f64(n).map_or(J::Null, J::Number)
            }
        }
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.into_iter().map(value_to_json).collect()),
        Some(Kind::StructValue(s)) => J::Object(struct_to_json(s)),
    }
}

/// A protobuf `Struct` of a JSON object.
pub fn json_to_struct(m: &serde_json::Map<String, serde_json::Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: m
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> prost_types::Value {
    use prost_types::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    prost_types::Value { kind: Some(kind) }
}

/// Seconds of a protobuf `Duration` field: whole seconds, positive.
pub fn duration_secs(field: &str, d: Option<prost_types::Duration>) -> Result<Option<i64>, Status> {
    match d {
        None => Ok(None),
        Some(d) if d.nanos != 0 => Err(invalid(field, "must be whole seconds")),
        Some(d) if d.seconds <= 0 => Err(invalid(field, "must be positive")),
        Some(d) => Ok(Some(d.seconds)),
    }
}
