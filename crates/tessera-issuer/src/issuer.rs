//! `IssuerService`: Issue, Refresh, IssuePurposeToken, RedeemPurposeToken.
//! The handlers parse requests into domain commands; the rules live in the
//! domain crate and the transactions in the store.

use crate::keys::KeyManager;
use std::sync::Arc;
use tessera_api::caller::not_allowed;
use tessera_api::ports::Revoker;
use tessera_api::requests::issue_command;
use tessera_api::{from_domain, timestamp};
use tessera_domain::callers::Caller;
use tessera_domain::clock::Clock;
use tessera_domain::issue::{IssueCommand, mint_login};
use tessera_domain::policy::Policy;
use tessera_domain::refresh::{FamilyPolicy, RefreshSecret};
use tessera_domain::store::Store;
use tessera_proto::v1::issuer_service_server::IssuerService;
use tessera_proto::v1::{
    IssuePurposeTokenRequest, IssuePurposeTokenResponse, IssueRequest, IssueResponse,
    RedeemPurposeTokenRequest, RedeemPurposeTokenResponse, RefreshRequest, RefreshResponse,
};
use tessera_telemetry::metrics::Metrics;
use tonic::{Request, Response, Status};

/// What the issuer needs besides its keys and store.
pub struct IssuerConfig {
    /// Token policy.
    pub policy: Policy,
    /// Family lifetimes and grace.
    pub families: FamilyPolicy,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Derives refresh-token successors.
    pub refresh_secret: RefreshSecret,
    /// The revocation service (in-process, or over gRPC in split roles):
    /// told about reused refresh tokens, password resets that end every
    /// session, and key kills to fan out.
    pub revocations: Arc<dyn Revoker>,
    /// Counters.
    pub metrics: Arc<Metrics>,
}

/// `IssuerService`.
#[derive(Clone)]
pub struct IssuerApi {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) keys: Arc<KeyManager>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) cfg: IssuerConfig,
}

impl std::fmt::Debug for IssuerApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerApi").finish_non_exhaustive()
    }
}

impl IssuerApi {
    /// The service.
    pub fn new(keys: Arc<KeyManager>, store: Arc<dyn Store>, cfg: IssuerConfig) -> Self {
        Self {
            inner: Arc::new(Inner { keys, store, cfg }),
        }
    }
}

/// The caller's rights over what it asks for: the audience, every extra
/// claim name (checked after validation, so a malformed request is
/// INVALID_ARGUMENT whoever sends it).
fn may_issue(caller: &Caller, cmd: &IssueCommand) -> Result<(), Status> {
    if !caller.may_issue_for(&cmd.audience) {
        let aud = &cmd.audience;
        return Err(not_allowed(
            caller,
            "Issue",
            &format!("issue tokens for audience {aud:?}"),
        ));
    }
    if let Some(name) = cmd.extra_claims.keys().find(|n| !caller.may_add_claim(n)) {
        return Err(not_allowed(
            caller,
            "Issue",
            &format!("add the claim {name:?}"),
        ));
    }
    Ok(())
}

#[tonic::async_trait]
impl IssuerService for IssuerApi {
    #[tracing::instrument(skip_all, fields(family_id))]
    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let me = &self.inner;
        let caller = tessera_api::caller::caller(&request).cloned();
        // Parse, don't validate: the request becomes a checked command.
        let cmd = issue_command(request.into_inner(), &me.cfg.policy)?;
        if let Some(caller) = caller {
            may_issue(&caller, &cmd)?;
        }
        let version = me
            .store
            .subject_version(&cmd.subject)
            .await
            .map_err(from_domain)?;
        let key = me.keys.signing_key().map_err(from_domain)?;
        let now = me.cfg.clock.now();
        let minted = mint_login(&cmd, &me.cfg.policy, &me.cfg.families, &key, version, now)
            .map_err(from_domain)?;
        // Durable before the tokens leave: a refresh token the store does not
        // know would be useless.
        me.store
            .open_family(&minted.family)
            .await
            .map_err(from_domain)?;
        tracing::Span::current().record("family_id", minted.family.family_id.as_str());
        me.cfg.metrics.issued();
        Ok(Response::new(IssueResponse {
            access_token: minted.access_token,
            access_token_expires_at: Some(timestamp(minted.claims.exp)),
            refresh_token_expires_at: Some(timestamp(minted.family.idle_expires_at)),
            refresh_token: minted.refresh_token.reveal(),
            family_id: minted.family.family_id,
            access_token_id: minted.claims.jti,
        }))
    }

    #[tracing::instrument(skip_all, fields(family_id))]
    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let caller = tessera_api::caller::caller_of(&request);
        crate::refresh::refresh(&self.inner, request.into_inner(), &caller)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn issue_purpose_token(
        &self,
        request: Request<IssuePurposeTokenRequest>,
    ) -> Result<Response<IssuePurposeTokenResponse>, Status> {
        crate::purpose::issue(&self.inner, request.into_inner())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn redeem_purpose_token(
        &self,
        request: Request<RedeemPurposeTokenRequest>,
    ) -> Result<Response<RedeemPurposeTokenResponse>, Status> {
        let caller = tessera_api::caller::caller_of(&request);
        crate::purpose::redeem(&self.inner, request.into_inner(), &caller)
            .await
            .map(Response::new)
    }
}
