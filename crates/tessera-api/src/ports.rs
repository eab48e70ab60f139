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
    /// `RevocationService.Revoke`, asked for by `caller` (an audit name: a
    /// caller's id, or `tessera_telemetry::audit::SERVER` for what the
    /// issuer does on its own). Over gRPC the calling service is the
    /// authenticated caller and `caller` travels as
    /// [`crate::caller::ON_BEHALF_OF`], so the audit names both.
    async fn revoke(&self, request: RevokeRequest, caller: &str) -> Result<RevokeResponse, Status>;

    /// The key manager has killed `kid` (durably): fan the kill out to every
    /// verifier. Over gRPC this is `Revoke{kid}`, whose second kill changes
    /// nothing; in process it fans out without asking again.
    async fn key_killed(&self, kid: &str, reason: &str) -> Result<(), Status> {
        self.revoke(kill_request(kid, reason), tessera_telemetry::audit::SERVER)
            .await
            .map(drop)
    }
}

/// `Revoke{kid}`, as the issuer fans out a kill.
fn kill_request(kid: &str, reason: &str) -> RevokeRequest {
    RevokeRequest {
        target: Some(Target::Kid(kid.to_owned())),
        reason: reason.to_owned(),
    }
}

#[tonic::async_trait]
impl Revoker for RevocationServiceClient<PeerChannel> {
    async fn revoke(&self, request: RevokeRequest, caller: &str) -> Result<RevokeResponse, Status> {
        // The generated client's own method (takes `&mut self`).
        RevocationServiceClient::revoke(&mut self.clone(), on_behalf_of(request, caller))
            .await
            .map(tonic::Response::into_inner)
    }

    async fn key_killed(&self, kid: &str, reason: &str) -> Result<(), Status> {
        let mut request = tonic::Request::new(kill_request(kid, reason));
        request.metadata_mut().insert(
            crate::caller::KILL_FAN_OUT,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        RevocationServiceClient::revoke(&mut self.clone(), request)
            .await
            .map(drop)
    }
}

/// `message`, naming `caller` as who the calling service acts for (nothing
/// for the server's own acts, or a name that is no caller id).
fn on_behalf_of<T>(message: T, caller: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if caller != tessera_telemetry::audit::SERVER
        && crate::caller::is_caller_name(caller)
        && let Ok(v) = caller.parse()
    {
        request
            .metadata_mut()
            .insert(crate::caller::ON_BEHALF_OF, v);
    }
    request
}

/// The issuer's key manager, as the revocation service asks it to kill a key.
#[tonic::async_trait]
pub trait KeyKiller: Send + Sync + 'static {
    /// Marks `kid` compromised (durable, exactly once across instances; the
    /// next key signs at once if it was signing). `Ok(None)` for an unknown
    /// kid; `Ok(Some(newly))` otherwise: killing a key already compromised
    /// is `Some(false)` and changes nothing. `caller` is who asked, for the
    /// audit trail (over gRPC the issuer names the calling service and,
    /// relayed, who asked it).
    async fn kill(&self, kid: &str, reason: &str, caller: &str) -> Result<Option<bool>, Status>;
}

#[tonic::async_trait]
impl KeyKiller for KeyServiceClient<PeerChannel> {
    async fn kill(&self, kid: &str, reason: &str, caller: &str) -> Result<Option<bool>, Status> {
        let request = CompromiseKeyRequest {
            kid: kid.to_owned(),
            reason: reason.to_owned(),
        };
        let r = KeyServiceClient::compromise_key(&mut self.clone(), on_behalf_of(request, caller))
            .await;
        match r {
            Ok(r) => Ok(Some(r.into_inner().newly)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }
}
