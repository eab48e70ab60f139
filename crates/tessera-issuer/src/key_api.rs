//! `KeyService` over a [`KeyManager`].

use crate::keys::KeyManager;
use std::sync::Arc;
use tessera_api::ports::Revoker;
use tessera_api::{from_domain, invalid, status, timestamp};
use tessera_domain::issue::check_text;
use tessera_domain::keys::{Algorithm, KeyState};
use tessera_domain::store::StoredKey;
use tessera_proto::v1::key_service_server::KeyService;
use tessera_proto::v1::{
    CompromiseKeyRequest, CompromiseKeyResponse, ErrorReason, GetJwksRequest, GetJwksResponse,
    ListKeysRequest, ListKeysResponse, PublicKey, RetireKeyRequest, RetireKeyResponse,
    RotateKeysRequest, RotateKeysResponse, SigningAlgorithm, WatchKeysRequest, WatchKeysResponse,
};
use tonic::{Code, Request, Response, Status};

/// `KeyService`.
#[derive(Clone)]
pub struct KeyApi {
    keys: Arc<KeyManager>,
    revocations: Arc<dyn Revoker>,
    /// The longest access-token life: the window of the compromise estimate.
    token_window: i64,
    /// Turns true when the server shuts down: ends the WatchKeys streams.
    shutdown: tokio::sync::watch::Receiver<bool>,
    /// Counters.
    metrics: Arc<tessera_telemetry::metrics::Metrics>,
}

impl std::fmt::Debug for KeyApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyApi").finish_non_exhaustive()
    }
}

impl KeyApi {
    /// The service. A compromise is fanned out through `revocations`.
    pub fn new(
        keys: Arc<KeyManager>,
        revocations: Arc<dyn Revoker>,
        token_window: i64,
        shutdown: tokio::sync::watch::Receiver<bool>,
        metrics: Arc<tessera_telemetry::metrics::Metrics>,
    ) -> Self {
        Self {
            keys,
            revocations,
            token_window,
            shutdown,
            metrics,
        }
    }
}

fn algorithm(a: Algorithm) -> SigningAlgorithm {
    match a {
        Algorithm::Es256 => SigningAlgorithm::Es256,
        Algorithm::EdDsa => SigningAlgorithm::Eddsa,
        Algorithm::Rs256 => SigningAlgorithm::Rs256,
        Algorithm::Ps256 => SigningAlgorithm::Ps256,
    }
}

fn state(s: KeyState) -> tessera_proto::v1::KeyState {
    use tessera_proto::v1::KeyState as P;
    match s {
        KeyState::Pending => P::Pending,
        KeyState::Active => P::Active,
        KeyState::Retiring => P::Retiring,
        KeyState::Retired => P::Retired,
        KeyState::Compromised => P::Compromised,
    }
}

fn public_key(k: &StoredKey) -> PublicKey {
    PublicKey {
        kid: k.kid.clone(),
        algorithm: algorithm(k.algorithm).into(),
        state: state(k.state).into(),
        jwk_json: k.public_jwk.clone(),
        created_at: Some(timestamp(k.created_at)),
        activates_at: k.activated_at.or(k.activates_at).map(timestamp),
        retires_at: k.retiring_at.map(timestamp),
    }
}

fn key_not_found() -> Status {
    status(
        Code::NotFound,
        ErrorReason::KeyNotFound,
        "no key has this kid",
    )
}

impl KeyApi {
    fn published(&self) -> Vec<PublicKey> {
        self.keys
            .key_set()
            .keys()
            .iter()
            .map(|k| PublicKey {
                kid: k.kid().to_owned(),
                algorithm: algorithm(k.algorithm()).into(),
                state: state(k.state()).into(),
                jwk_json: k.jwk().to_string(),
                ..Default::default()
            })
            .collect()
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    #[tracing::instrument(skip_all)]
    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let doc = self.keys.jwks();
        Ok(Response::new(GetJwksResponse {
            jwks_json: doc.json.clone(),
            keys: self.published(),
            etag: doc.etag.clone(),
            max_age_seconds: doc.max_age,
        }))
    }

    type WatchKeysStream =
        tokio_stream::wrappers::ReceiverStream<Result<WatchKeysResponse, Status>>;

    #[tracing::instrument(skip_all)]
    async fn watch_keys(
        &self,
        _request: Request<WatchKeysRequest>,
    ) -> Result<Response<Self::WatchKeysStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut changes = self.keys.watch();
        let mut shutdown = self.shutdown.clone();
        let me = self.clone();
        tokio::spawn(async move {
            let mut known: Vec<String> = Vec::new();
            loop {
                changes.borrow_and_update();
                let keys = me.published();
                // Kids that left the set since the last message and are now
                // compromised: verifiers drop their cached results at once.
                let now_kids: Vec<String> = keys.iter().map(|k| k.kid.clone()).collect();
                let mut compromised_kids = Vec::new();
                if let Ok(all) = me.keys.list().await {
                    for k in all.iter().filter(|k| k.state == KeyState::Compromised) {
                        if known.contains(&k.kid) {
                            compromised_kids.push(k.kid.clone());
                        }
                    }
                }
                known = now_kids;
                let msg = WatchKeysResponse {
                    keys,
                    etag: me.keys.jwks().etag.clone(),
                    compromised_kids,
                };
                if tx.send(Ok(msg)).await.is_err() {
                    return;
                }
                // Ends with the server: graceful shutdown waits for every
                // open stream, and this one would otherwise never end.
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(tokio_stream::wrappers::ReceiverStream::new(
            rx,
        )))
    }

    #[tracing::instrument(skip_all)]
    async fn list_keys(
        &self,
        _request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let keys = self.keys.list().await.map_err(from_domain)?;
        Ok(Response::new(ListKeysResponse {
            keys: keys.iter().map(public_key).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn rotate_keys(
        &self,
        request: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        let caller = tessera_api::caller::caller_of(&request);
        let r = request.into_inner();
        let wanted = SigningAlgorithm::try_from(r.algorithm)
            .map_err(|_| invalid("algorithm", format!("{} is not a known value", r.algorithm)))?;
        if wanted != SigningAlgorithm::Unspecified
            && wanted != algorithm(self.keys.schedule().algorithm)
        {
            return Err(invalid(
                "algorithm",
                "this server rotates to its configured algorithm only (--key-algorithm)",
            ));
        }
        let changed = self.keys.rotate(&caller).await.map_err(from_domain)?;
        Ok(Response::new(RotateKeysResponse {
            changed: changed.iter().map(public_key).collect(),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn retire_key(
        &self,
        request: Request<RetireKeyRequest>,
    ) -> Result<Response<RetireKeyResponse>, Status> {
        let caller = tessera_api::caller::caller_of(&request);
        let kid = request.into_inner().kid;
        check_text("kid", &kid, 64).map_err(from_domain)?;
        let keys = self.keys.list().await.map_err(from_domain)?;
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(key_not_found)?;
        if key.state == KeyState::Retired {
            return Ok(Response::new(RetireKeyResponse {
                key: Some(public_key(key)),
            }));
        }
        // Only the schedule retires keys, and only once no live token needs
        // them: run it now and report whether this key went.
        self.keys.tick_by(&caller).await.map_err(from_domain)?;
        let keys = self.keys.list().await.map_err(from_domain)?;
        let key = keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(key_not_found)?;
        if key.state != KeyState::Retired {
            return Err(status(
                Code::FailedPrecondition,
                ErrorReason::KeyStateInvalid,
                "only a retiring key whose tokens have all expired can be retired",
            ));
        }
        Ok(Response::new(RetireKeyResponse {
            key: Some(public_key(key)),
        }))
    }

    #[tracing::instrument(skip_all, fields(kid))]
    async fn compromise_key(
        &self,
        request: Request<CompromiseKeyRequest>,
    ) -> Result<Response<CompromiseKeyResponse>, Status> {
        let caller = tessera_api::caller::caller_of(&request);
        // Relayed (only a `relay` caller may, the edge checks): a
        // revocation service asked for this kill from its `Revoke{kid}`,
        // and fans it out and records it itself once this answers.
        let relayed = request
            .metadata()
            .contains_key(tessera_api::caller::ON_BEHALF_OF);
        let r = request.into_inner();
        check_text("kid", &r.kid, 64).map_err(from_domain)?;
        if r.reason.len() > 1024 {
            return Err(invalid("reason", "at most 1024 bytes"));
        }
        tracing::Span::current().record("kid", r.kid.as_str());
        let killed = self
            .keys
            .compromise(&r.kid, &caller)
            .await
            .map_err(from_domain)?
            .ok_or_else(key_not_found)?;
        if killed.newly && !relayed {
            // Fan-out: the revocation service marks the key in every
            // instance's view, so its tokens fail Verify everywhere without
            // waiting for a key-set reload.
            self.revocations.key_killed(&r.kid, &r.reason).await?;
        }
        let affected = self.affected_by(killed.key.activated_at).await?;
        let (key, new_active) = (
            Some(public_key(&killed.key)),
            killed.new_active.as_ref().map(public_key),
        );
        if killed.newly {
            self.metrics.key_compromised();
            tracing::warn!(
                kid = %r.kid,
                affected_sessions_estimate = affected,
                "key compromised"
            );
        } else {
            // Asked again (a retry, or the revocation service confirming
            // the kill it fans out): nothing changed.
            tracing::debug!(kid = %r.kid, "key already compromised");
        }
        Ok(Response::new(CompromiseKeyResponse {
            key,
            new_active_key: new_active,
            affected_tokens: affected,
            estimate: true,
            newly: killed.newly,
        }))
    }
}

impl KeyApi {
    /// The sessions a key that signed since `activated_at` may have
    /// reached (an estimate; 0 for a key that never signed).
    async fn affected_by(&self, activated_at: Option<i64>) -> Result<u64, Status> {
        let Some(a) = activated_at else {
            return Ok(0);
        };
        let since = a.max(self.keys_now() - self.token_window);
        self.keys
            .affected_sessions(since)
            .await
            .map_err(from_domain)
    }

    fn keys_now(&self) -> i64 {
        self.keys.now()
    }
}
