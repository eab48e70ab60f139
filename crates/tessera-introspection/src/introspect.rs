//! `IntrospectionService.Verify`.

use crate::Verifier;
use tessera_api::requests::{VerifyCommand, verify_command, verify_failure};
use tessera_api::{from_domain, json_to_struct, timestamp};
use tessera_domain::callers::Caller;
use tessera_domain::claims::{Audience, Claims};
use tessera_domain::verify::{Expectation, Failure, Signed, verify_cached, verify_strong};
use tessera_proto::v1::introspection_service_server::IntrospectionService;
use tessera_proto::v1::{VerifiedClaims, VerifyFailure, VerifyRequest, VerifyResponse};
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

/// Every claim of the token as a `google.protobuf.Struct`, built straight
/// from the typed claims (no intermediate JSON tree: this runs on every
/// successful Verify).
fn all_claims(c: &Claims) -> prost_types::Struct {
    use prost_types::value::Kind;
    let text = |s: &str| Kind::StringValue(s.to_owned());
    let number = |n: f64| Kind::NumberValue(n);
    #[allow(clippy::cast_precision_loss)] // times and versions are far below 2^53
    let mut fields: Vec<(&str, Kind)> = vec![
        ("iss", text(&c.iss)),
        ("sub", text(&c.sub)),
        ("exp", number(c.exp as f64)),
        ("nbf", number(c.nbf as f64)),
        ("iat", number(c.iat as f64)),
        ("jti", text(&c.jti)),
        ("ver", number(c.ver as f64)),
    ];
    fields.push((
        "aud",
        match &c.aud {
            Audience::One(a) => text(a),
            Audience::Many(v) => Kind::ListValue(prost_types::ListValue {
                values: v
                    .iter()
                    .map(|a| prost_types::Value {
                        kind: Some(text(a)),
                    })
                    .collect(),
            }),
        },
    ));
    for (name, value) in [
        ("sid", &c.sid),
        ("scope", &c.scope),
        ("client_id", &c.client_id),
    ] {
        if let Some(v) = value {
            fields.push((name, text(v)));
        }
    }
    let mut s = json_to_struct(&c.extra);
    s.fields.extend(
        fields
            .into_iter()
            .map(|(k, kind)| (k.to_owned(), prost_types::Value { kind: Some(kind) })),
    );
    s
}

fn claims(s: &Signed) -> VerifiedClaims {
    let c = &s.claims;
    VerifiedClaims {
        issuer: c.iss.clone(),
        subject: c.sub.clone(),
        audience: c.aud.to_vec(),
        expires_at: Some(timestamp(c.exp)),
        issued_at: Some(timestamp(c.iat)),
        not_before: Some(timestamp(c.nbf)),
        token_id: c.jti.clone(),
        family_id: c.sid.clone().unwrap_or_default(),
        subject_version: c.ver,
        scopes: c
            .scope
            .as_deref()
            .map(|s| s.split(' ').map(str::to_owned).collect())
            .unwrap_or_default(),
        client_id: c.client_id.clone().unwrap_or_default(),
        kid: s.kid.clone(),
        all_claims: Some(all_claims(c)),
    }
}

/// A caller verifies only for its own audiences: the answer carries every
/// claim of the token, which another audience's service has no business
/// reading. STRONG reads the store on every call: a right of its own, so
/// a caller granted Verify cannot turn each call into a store read.
fn within_reach(c: &Caller, cmd: &VerifyCommand<'_>) -> Result<(), Status> {
    if !c.may_issue_for(cmd.audience) {
        let what = format!("verify tokens for audience {:?}", cmd.audience);
        return Err(tessera_api::caller::not_allowed(c, "Verify", &what));
    }
    if cmd.strong && !c.may_verify_strong() {
        let what = "verify with STRONG consistency (verify_strong)";
        return Err(tessera_api::caller::not_allowed(c, "Verify", what));
    }
    Ok(())
}

#[tonic::async_trait]
impl IntrospectionService for IntrospectionApi {
    #[tracing::instrument(skip_all, fields(outcome))]
    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let caller = tessera_api::caller::caller(&request).cloned();
        let r = request.into_inner();
        let cmd = verify_command(&r)?;
        if let Some(c) = &caller {
            within_reach(c, &cmd)?;
        }
        let v = &self.v;
        let now = v.clock.now();
        let expect = Expectation {
            audience: cmd.audience,
            kind: cmd.kind,
        };
        let outcome = if cmd.strong {
            verify_strong(cmd.token, v.keys.ring(), &v.policy, &expect, &*v.store, now)
                .await
                .map_err(from_domain)?
        } else {
            verify_cached(cmd.token, v.keys.ring(), &v.policy, &expect, &v.view, now)
        };
        v.metrics.verify(outcome.as_ref().err().copied());
        if let Err(f) = &outcome {
            v.failures
                .record(caller.as_deref().map(|c| c.id.as_str()), *f);
        }
        if outcome.as_ref().err() == Some(&Failure::UnknownKey) {
            v.keys.unknown_kid();
        }
        let span = tracing::Span::current();
        Ok(Response::new(match outcome {
            Ok(s) => {
                span.record("outcome", "valid");
                VerifyResponse {
                    valid: true,
                    failure: VerifyFailure::Unspecified.into(),
                    claims: Some(claims(&s)),
                }
            }
            Err(f) => {
                span.record("outcome", f.as_str());
                VerifyResponse {
                    valid: false,
                    failure: verify_failure(f).into(),
                    claims: None,
                }
            }
        }))
    }
}
