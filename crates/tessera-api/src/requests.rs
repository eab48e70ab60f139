//! Requests become domain commands here (parse, don't validate): the first
//! step of each handler, so generated types never reach the domain and every
//! bad field is INVALID_ARGUMENT naming it. Kept in this crate, with no
//! service state, so the conversions can be tested over arbitrary requests
//! (`requests_props.rs`).

use crate::{duration_secs, from_domain, invalid, required_enum, struct_to_json, token_kind};
use tessera_domain::issue::{IssueCommand, check_text};
use tessera_domain::kind::TokenKind;
use tessera_domain::policy::{MAX_TOKEN_BYTES, Policy};
use tessera_domain::verify::Failure;
use tessera_proto::v1::{self, Consistency, IssueRequest, VerifyRequest};
use tonic::Status;

/// A token field of a request: required, at most 8 KiB (the token's own
/// checks are Verify's answer, not a request error).
pub fn token_field<'a>(field: &str, token: &'a str) -> Result<&'a str, Status> {
    if token.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(
            field,
            format!("is larger than {MAX_TOKEN_BYTES} bytes"),
        ));
    }
    Ok(token)
}

/// A validated Verify request.
#[derive(Debug)]
pub struct VerifyCommand<'a> {
    /// The token, 1 byte to 8 KiB.
    pub token: &'a str,
    /// The audience expected in `aud`.
    pub audience: &'a str,
    /// The kind expected in `typ`.
    pub kind: TokenKind,
    /// Step 5 against the store (`consistency = STRONG`).
    pub strong: bool,
}

/// Parses a Verify request.
pub fn verify_command(r: &VerifyRequest) -> Result<VerifyCommand<'_>, Status> {
    let token = token_field("token", &r.token)?;
    check_text("expected_audience", &r.expected_audience, 255).map_err(from_domain)?;
    let kind = required_enum::<v1::TokenKind>("expected_kind", r.expected_kind)?;
    let kind = token_kind(kind).ok_or_else(|| invalid("expected_kind", "is required"))?;
    let consistency = required_enum::<Consistency>("consistency", r.consistency)?;
    Ok(VerifyCommand {
        token,
        audience: &r.expected_audience,
        kind,
        strong: consistency == Consistency::Strong,
    })
}

/// Parses and validates an Issue request against the policy.
pub fn issue_command(r: IssueRequest, policy: &Policy) -> Result<IssueCommand, Status> {
    let cmd = IssueCommand {
        access_ttl: duration_secs("access_token_ttl", r.access_token_ttl)?,
        subject: r.subject,
        audience: r.audience,
        scopes: r.scopes,
        extra_claims: r.extra_claims.map(struct_to_json).unwrap_or_default(),
        client_id: (!r.client_id.is_empty()).then_some(r.client_id),
    };
    cmd.validate(policy).map_err(from_domain)?;
    Ok(cmd)
}

/// The contract's reason for a domain Verify failure.
pub fn verify_failure(f: Failure) -> v1::VerifyFailure {
    match f {
        Failure::Malformed => v1::VerifyFailure::Malformed,
        Failure::BadSignature => v1::VerifyFailure::BadSignature,
        Failure::UnknownKey => v1::VerifyFailure::UnknownKey,
        Failure::AlgorithmNotAllowed => v1::VerifyFailure::AlgorithmNotAllowed,
        Failure::Expired => v1::VerifyFailure::Expired,
        Failure::NotYetValid => v1::VerifyFailure::NotYetValid,
        Failure::WrongIssuer => v1::VerifyFailure::WrongIssuer,
        Failure::WrongAudience => v1::VerifyFailure::WrongAudience,
        Failure::WrongTokenKind => v1::VerifyFailure::WrongTokenKind,
        Failure::Revoked => v1::VerifyFailure::Revoked,
        Failure::UnsupportedHeader => v1::VerifyFailure::UnsupportedHeader,
        Failure::MissingClaim => v1::VerifyFailure::MissingClaim,
        Failure::InvalidClaim => v1::VerifyFailure::InvalidClaim,
    }
}

#[cfg(test)]
#[path = "requests_props.rs"]
mod props;
