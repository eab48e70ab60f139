//! `IssuerService`: Issue now; Refresh and purpose tokens answer
//! UNIMPLEMENTED until their issue lands.

use crate::keys::KeyManager;
use std::sync::Arc;
use tessera_domain::clock::Clock;
use tessera_domain::issue::{FamilyPolicy, IssueCommand, mint_login};
use tessera_domain::policy::Policy;
use tessera_domain::store::SessionStore;
use tessera_grpc::{duration_secs, from_domain, struct_to_json, timestamp, unimplemented};
use tessera_proto::v1::issuer_service_server::IssuerService;
use tessera_proto::v1::{
    IssuePurposeTokenRequest, IssuePurposeTokenResponse, IssueRequest, IssueResponse,
    RedeemPurposeTokenRequest, RedeemPurposeTokenResponse, RefreshRequest, RefreshResponse,
};
use tonic::{Request, Response, Status};

/// `IssuerService`.
#[derive(Debug, Clone)]
pub struct IssuerApi {
    inner: Arc<Inner>,
}

struct Inner {
    keys: Arc<KeyManager>,
    store: Arc<dyn SessionStore>,
    policy: Policy,
    families: FamilyPolicy,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerApi").finish_non_exhaustive()
    }
}

impl IssuerApi {
    /// The service.
    pub fn new(
        keys: Arc<KeyManager>,
        store: Arc<dyn SessionStore>,
        policy: Policy,
        families: FamilyPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                keys,
                store,
                policy,
                families,
                clock,
            }),
        }
    }
}

/// Parse, don't validate: the request becomes a domain command here.
fn issue_command(r: IssueRequest) -> Result<IssueCommand, Status> {
    Ok(IssueCommand {
        access_ttl: duration_secs("access_token_ttl", r.access_token_ttl)?,
        subject: r.subject,
        audience: r.audience,
        scopes: r.scopes,
        extra_claims: r.extra_claims.map(struct_to_json).unwrap_or_default(),
        client_id: (!r.client_id.is_empty()).then_some(r.client_id),
    })
}

#[tonic::async_trait]
impl IssuerService for IssuerApi {
    #[tracing::instrument(skip_all, fields(family_id))]
    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let me = &self.inner;
        let cmd = issue_command(request.into_inner())?;
        cmd.validate(&me.policy).map_err(from_domain)?;
        let version = me
            .store
            .subject_version(&cmd.subject)
            .await
            .map_err(from_domain)?;
        let key = me.keys.signing_key().map_err(from_domain)?;
        let now = me.clock.now();
        let minted =
            mint_login(&cmd, &me.policy, &me.families, &key, version, now).map_err(from_domain)?;
        // Durable before the tokens leave: a refresh token the store does not
        // know would be useless.
        me.store
            .open_family(&minted.family)
            .await
            .map_err(from_domain)?;
        tracing::Span::current().record("family_id", minted.family.family_id.as_str());
        Ok(Response::new(IssueResponse {
            access_token: minted.access_token,
            access_token_expires_at: Some(timestamp(minted.claims.exp)),
            refresh_token_expires_at: Some(timestamp(minted.family.idle_expires_at)),
            refresh_token: minted.refresh_token.reveal(),
            family_id: minted.family.family_id,
            access_token_id: minted.claims.jti,
        }))
    }

    async fn refresh(
        &self,
        _request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        Err(unimplemented("Refresh"))
    }

    async fn issue_purpose_token(
        &self,
        _request: Request<IssuePurposeTokenRequest>,
    ) -> Result<Response<IssuePurposeTokenResponse>, Status> {
        Err(unimplemented("IssuePurposeToken"))
    }

    async fn redeem_purpose_token(
        &self,
        _request: Request<RedeemPurposeTokenRequest>,
    ) -> Result<Response<RedeemPurposeTokenResponse>, Status> {
        Err(unimplemented("RedeemPurposeToken"))
    }
}
