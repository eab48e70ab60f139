//! Why a token is not valid: Verify's one answer per token (the first
//! failing step, `docs/architecture.md`, "Verify"), shared by the pipeline,
//! its parsers and the inspection that lists every finding.

/// Why a token is not valid. Exactly one reason: the first failing step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// Not a well-formed JWS compact token of JSON objects, or too large.
    Malformed,
    /// The signature does not verify.
    BadSignature,
    /// No `kid`, or no published key by that id.
    UnknownKey,
    /// `alg` is `none`, not allowed, or not the named key's algorithm.
    AlgorithmNotAllowed,
    /// Past `exp` (plus skew).
    Expired,
    /// Before `nbf`, or `iat` in the future (beyond skew).
    NotYetValid,
    /// `iss` is not ours.
    WrongIssuer,
    /// `aud` lacks the expected audience.
    WrongAudience,
    /// `typ` is not the expected kind.
    WrongTokenKind,
    /// Revoked: jti, family, subject version or key.
    Revoked,
    /// A header parameter Tessera never mints (anything but `alg`, `kid`
    /// and `typ`: `jku`, `jwk`, `x5c`, `crit`, `b64`, `zip`, …), whatever
    /// its value.
    UnsupportedHeader,
    /// A required claim is absent.
    MissingClaim,
    /// A claim is present but of the wrong type or out of range (e.g. `exp`
    /// as a string, a fraction or past year 9999; `aud` as a number).
    InvalidClaim,
}

impl Failure {
    /// A stable lower-case name, for metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::WrongTokenKind => "wrong_token_kind",
            Self::Revoked => "revoked",
            Self::UnsupportedHeader => "unsupported_header",
            Self::MissingClaim => "missing_claim",
            Self::InvalidClaim => "invalid_claim",
        }
    }
}
