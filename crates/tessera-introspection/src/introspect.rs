//! `IntrospectionService.Verify`.

use crate::{Verifier, token_field};
use tessera_domain::issue::check_text;
use tessera_domain::kind::TokenKind;
use tessera_domain::verify::{
    Expectation, Failure, Signed, check_claims, verify, verify_signature,
};
use tessera_grpc::{from_domain, invalid, json_to_struct, required_enum, timestamp, token_kind};
use tessera_proto::v1::introspection_service_server::IntrospectionService;
use tessera_proto::v1::{
    Consistency, VerifiedClaims, VerifyFailure, VerifyRequest, VerifyResponse,
};
use tonic::{Request, Response, Status};

/// `IntrospectionService`.
#[derive(Debug, Clone)]
pub struct IntrospectionApi {
    v: Verifier,
}

impl IntrospectionApi {
    /// The service.
    pub fn new(v: Verifier) -> Self {
        Self { v }
    }
}

/// A validated Verify request.
struct VerifyCommand<'a> {
    token: &'a str,
    audience: &'a str,
    kind: TokenKind,
    strong: bool,
}

fn verify_command(r: &VerifyRequest) -> Result<VerifyCommand<'_>, Status> {
    let token = token_field("token", &r.token)?;
    check_text("expected_audience", &r.expected_audience, 255).map_err(from_domain)?;
    let kind = required_enum::<tessera_proto::v1::TokenKind>("expected_kind", r.expected_kind)?;
    let kind = token_kind(kind).ok_or_else(|| invalid("expected_kind", "is required"))?;
    let consistency = required_enum::<Consistency>("consistency", r.consistency)?;
    Ok(VerifyCommand {
        token,
        audience: &r.expected_audience,
        kind,
        strong: consistency == Consistency::Strong,
    })
}

fn failure(f: Failure) -> VerifyFailure {
    match f {
        Failure::Malformed => VerifyFailure::Malformed,
        Failure::BadSignature => VerifyFailure::BadSignature,
        Failure::UnknownKey => VerifyFailure::UnknownKey,
        Failure::AlgorithmNotAllowed => VerifyFailure::AlgorithmNotAllowed,
        Failure::Expired => VerifyFailure::Expired,
        Failure::NotYetValid => VerifyFailure::NotYetValid,
        Failure::WrongIssuer => VerifyFailure::WrongIssuer,
        Failure::WrongAudience => VerifyFailure::WrongAudience,
        Failure::WrongTokenKind => VerifyFailure::WrongTokenKind,
        Failure::Revoked => VerifyFailure::Revoked,
        Failure::UnsupportedHeader => VerifyFailure::UnsupportedHeader,
        Failure::MissingClaim => VerifyFailure::MissingClaim,
    }
}

fn claims(s: Signed) -> VerifiedClaims {
    let all = serde_json::to_value(&s.claims)
        .ok()
        .and_then(|v| v.as_object().map(json_to_struct));
    let c = s.claims;
    VerifiedClaims {
        issuer: c.iss,
        subject: c.sub,
        audience: c.aud.to_vec(),
        expires_at: Some(timestamp(c.exp)),
        issued_at: Some(timestamp(c.iat)),
        not_before: Some(timestamp(c.nbf)),
        token_id: c.jti,
        family_id: c.sid.unwrap_or_default(),
        subject_version: c.ver,
        scopes: c
            .scope
            .map(|s| s.split(' ').map(str::to_owned).collect())
            .unwrap_or_default(),
        client_id: c.client_id.unwrap_or_default(),
        kid: s.kid,
        all_claims: all,
    }
}

#[tonic::async_trait]
impl IntrospectionService for IntrospectionApi {
    #[tracing::instrument(skip_all, fields(outcome))]
    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let r = request.into_inner();
        let cmd = verify_command(&r)?;
        let v = &self.v;
        let now = v.clock.now();
        let keys = v.keys.current();
        let expect = Expectation {
            audience: cmd.audience,
            kind: cmd.kind,
        };
        let outcome = if cmd.strong {
            // Steps 1–4 locally, step 5 against the durable store.
            match verify_signature(cmd.token, &keys, &v.policy)
                .and_then(|s| check_claims(&s, &expect, &v.policy, now).map(|()| s))
            {
                Ok(s) => {
                    if v.store
                        .is_revoked(&s.revocation_query(), now)
                        .await
                        .map_err(from_domain)?
                    {
                        Err(Failure::Revoked)
                    } else {
                        Ok(s)
                    }
                }
                Err(f) => Err(f),
            }
        } else {
            verify(cmd.token, &keys, &v.policy, &expect, &v.view, now)
        };
        v.metrics.verify(outcome.as_ref().err().copied());
        if let (Err(Failure::UnknownKey), Some(f)) = (&outcome, &v.follower) {
            f.unknown_kid();
        }
        let span = tracing::Span::current();
        Ok(Response::new(match outcome {
            Ok(s) => {
                span.record("outcome", "valid");
                VerifyResponse {
                    valid: true,
                    failure: VerifyFailure::Unspecified.into(),
                    claims: Some(claims(s)),
                }
            }
            Err(f) => {
                span.record("outcome", f.as_str());
                VerifyResponse {
                    valid: false,
                    failure: failure(f).into(),
                    claims: None,
                }
            }
        }))
    }
}
