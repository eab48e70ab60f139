//! `RevocationService.Revoke`: durable first, then the local view, then the
//! fan-out. A retry after any failure is safe: every step is idempotent.

use crate::{Verifier, token_field};
use tessera_domain::clock::UnixTime;
use tessera_domain::issue::check_text;
use tessera_domain::revocation::RevocationEvent;
use tessera_domain::verify::verify_signature;
use tessera_grpc::{from_domain, invalid, timestamp, unimplemented};
use tessera_proto::v1::revocation_service_server::RevocationService;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    RevokeRequest, RevokeResponse, WatchRevocationsRequest, WatchRevocationsResponse,
};
use tonic::{Request, Response, Status};

/// The furthest in the future a jti revocation may be asked to last.
const MAX_JTI_LIFETIME: i64 = 400 * 24 * 3600;

/// `RevocationService`.
#[derive(Debug, Clone)]
pub struct RevocationApi {
    v: Verifier,
}

impl RevocationApi {
    /// The service.
    pub fn new(v: Verifier) -> Self {
        Self { v }
    }

    /// The jti and `exp` of a token target. The token must be ours (signature
    /// and issuer); it may be expired or otherwise unusable, since revoking
    /// such a token is harmless (RFC 7009 section 2.2: invalid tokens do not
    /// cause an error).
    fn token_target(&self, token: &str) -> Result<(String, UnixTime), Status> {
        let token = token_field("token", token)?;
        let signed = verify_signature(token, &self.v.keys.current(), &self.v.policy)
            .ok()
            .filter(|s| s.claims.iss == self.v.policy.issuer)
            .ok_or_else(|| invalid("token", "is not a token issued by this service"))?;
        Ok((signed.claims.jti, signed.claims.exp))
    }
}

fn jti_target(
    t: tessera_proto::v1::JtiTarget,
    now: UnixTime,
) -> Result<(String, UnixTime), Status> {
    check_text("jti.jti", &t.jti, 128).map_err(from_domain)?;
    let exp = t
        .expires_at
        .ok_or_else(|| invalid("jti.expires_at", "is required"))?
        .seconds;
    if exp <= now {
        return Err(invalid("jti.expires_at", "must be in the future"));
    }
    if exp > now + MAX_JTI_LIFETIME {
        return Err(invalid("jti.expires_at", "must be at most 400 days ahead"));
    }
    Ok((t.jti, exp))
}

#[tonic::async_trait]
impl RevocationService for RevocationApi {
    #[tracing::instrument(skip_all, fields(target))]
    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<RevokeResponse>, Status> {
        let r = request.into_inner();
        if r.reason.len() > 1024 {
            return Err(invalid("reason", "at most 1024 bytes"));
        }
        let now = self.v.clock.now();
        let (jti, exp) = match r.target {
            None => return Err(invalid("target", "one target is required")),
            Some(Target::Token(t)) => self.token_target(&t)?,
            Some(Target::Jti(t)) => jti_target(t, now)?,
            Some(Target::FamilyId(_)) => return Err(unimplemented("Revoke by family")),
            Some(Target::Subject(_)) => return Err(unimplemented("Revoke by subject")),
            Some(Target::Kid(_)) => return Err(unimplemented("Revoke by key")),
        };
        // Kept until the token would have been rejected anyway.
        let until = exp.saturating_add(self.v.policy.clock_skew);
        let event = RevocationEvent::Jti {
            jti: jti.clone(),
            until,
        };
        let newly = self
            .v
            .store
            .record(&event, now)
            .await
            .map_err(from_domain)?;
        self.v.view.apply(&event);
        self.v.bus.publish(&event, now).await.map_err(from_domain)?;
        tracing::info!(newly, "token revoked");
        Ok(Response::new(RevokeResponse {
            revoked: u64::from(newly),
            jti,
            revoked_until: Some(timestamp(until)),
        }))
    }

    type WatchRevocationsStream =
        tokio_stream::wrappers::ReceiverStream<Result<WatchRevocationsResponse, Status>>;

    async fn watch_revocations(
        &self,
        _request: Request<WatchRevocationsRequest>,
    ) -> Result<Response<Self::WatchRevocationsStream>, Status> {
        Err(unimplemented("WatchRevocations"))
    }
}
