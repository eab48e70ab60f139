//! The two ports between the issuer and the introspection/revocation
//! service. Each has an in-process side (the embedded mode: both services in
//! one process, no TCP call to itself) and a gRPC side (split roles).
//!
//! - [`Revoker`]: what the issuer needs of the revocation service — revoke a
//!   family on refresh-token reuse, a subject's sessions on a password reset,
//!   and fan out a key kill.
//! - [`KeyKiller`]: what the revocation service needs of the issuer for
//!   `Revoke{kid}` — only the issuer's key manager changes key state.

use crate::client::PeerChannel;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{CompromiseKeyRequest, RevokeRequest, RevokeResponse};
use tonic::{Code, Status};

/// The revocation service, as the issuer calls it. In process, the
/// revocation service itself implements it.
#[tonic::async_trait]
pub trait Revoker: Send + Sync + 'static {
    /// `RevocationService.Revoke`.
    async fn revoke(&self, request: RevokeRequest) -> Result<RevokeResponse, Status>;

    /// The key manager has killed `kid` (durably): fan the kill out to every
    /// verifier. Over gRPC this is `Revoke{kid}`, whose second kill changes
    /// nothing; in process it fans out without asking again.
    async fn key_killed(&self, kid: &str, reason: &str) -> Result<(), Status> {
        self.revoke(RevokeRequest {
            target: Some(Target::Kid(kid.to_owned())),
            reason: reason.to_owned(),
        })
        .await
        .map(drop)
    }
}

#[tonic::async_trait]
impl Revoker for RevocationServiceClient<PeerChannel> {
    async fn revoke(&self, request: RevokeRequest) -> Result<RevokeResponse, Status> {
        // The generated client's own method (takes `&mut self`).
        RevocationServiceClient::revoke(&mut self.clone(), request)
            .await
            .map(tonic::Response::into_inner)
    }
}

/// The issuer's key manager, as the revocation service asks it to kill a key.
#[tonic::async_trait]
pub trait KeyKiller: Send + Sync + 'static {
    /// Marks `kid` compromised (durable, exactly once across instances; the
    /// next key signs at once if it was signing). `Ok(false)` for an unknown
    /// kid; killing a key already compromised is `Ok(true)` and changes
    /// nothing. `caller` is who asked, for the audit trail (over gRPC the
    /// issuer names the calling service itself).
    async fn kill(&self, kid: &str, reason: &str, caller: &str) -> Result<bool, Status>;
}

#[tonic::async_trait]
impl KeyKiller for KeyServiceClient<PeerChannel> {
    async fn kill(&self, kid: &str, reason: &str, _caller: &str) -> Result<bool, Status> {
        let r = KeyServiceClient::compromise_key(
            &mut self.clone(),
            CompromiseKeyRequest {
                kid: kid.to_owned(),
                reason: reason.to_owned(),
            },
        )
        .await;
        match r {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(s),
        }
    }
}
