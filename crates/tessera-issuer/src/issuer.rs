//! `IssuerService`: Issue, Refresh, IssuePurposeToken, RedeemPurposeToken.
//! The service only dispatches: each handler lives in its own module
//! (`issue`, `refresh`, `purpose`) over the shared state in `state`. The
//! handlers parse requests into domain commands; the rules live in the
//! domain crate and the transactions in the store.

use crate::keys::KeyManager;
use crate::state::{Inner, IssuerConfig};
use std::sync::Arc;
use tessera_domain::store::Store;
use tessera_proto::v1::issuer_service_server::IssuerService;
use tessera_proto::v1::{
    IssuePurposeTokenRequest, IssuePurposeTokenResponse, IssueRequest, IssueResponse,
    RedeemPurposeTokenRequest, RedeemPurposeTokenResponse, RefreshRequest, RefreshResponse,
};
use tonic::{Request, Response, Status};

/// `IssuerService`.
#[derive(Clone)]
pub struct IssuerApi {
    inner: Arc<Inner>,
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

#[tonic::async_trait]
impl IssuerService for IssuerApi {
    #[tracing::instrument(skip_all, fields(family_id))]
    async fn issue(
        &self,
        request: Request<IssueRequest>,
    ) -> Result<Response<IssueResponse>, Status> {
        let caller = tessera_api::caller::caller(&request).cloned();
        crate::issue::issue(&self.inner, request.into_inner(), caller)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all, fields(family_id))]
    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<RefreshResponse>, Status> {
        let who = crate::refresh::Who {
            audit: tessera_api::caller::caller_of(&request),
            caller: tessera_api::caller::caller(&request).cloned(),
        };
        crate::refresh::refresh(&self.inner, request.into_inner(), &who)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn issue_purpose_token(
        &self,
        request: Request<IssuePurposeTokenRequest>,
    ) -> Result<Response<IssuePurposeTokenResponse>, Status> {
        let owner = tessera_api::caller::caller(&request).map(|c| c.id.clone());
        crate::purpose::issue(&self.inner, request.into_inner(), owner.as_deref())
            .await
            .map(Response::new)
    }

    #[tracing::instrument(skip_all)]
    async fn redeem_purpose_token(
        &self,
        request: Request<RedeemPurposeTokenRequest>,
    ) -> Result<Response<RedeemPurposeTokenResponse>, Status> {
        let who = crate::refresh::Who {
            audit: tessera_api::caller::caller_of(&request),
            caller: tessera_api::caller::caller(&request).cloned(),
        };
        crate::purpose::redeem(&self.inner, request.into_inner(), &who)
            .await
            .map(Response::new)
    }
}
