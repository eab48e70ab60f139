//! Signing keys on the issuer side: bootstrapping the first key, opening the
//! active one, publishing the set, and `KeyService`.

use std::sync::{Arc, RwLock};
use tessera_domain::clock::Clock;
use tessera_domain::error::{DomainError, Result};
use tessera_domain::keys::{
    Algorithm, KeyMaterial, KeyRing, KeySet, KeyState, SigningKey, VerifyingKey,
};
use tessera_domain::seal::Kek;
use tessera_domain::store::{KeyStore, StoredKey};
use tessera_domain::{random_id, sha256};
use tessera_grpc::unimplemented;
use tessera_proto::v1::key_service_server::KeyService;
use tessera_proto::v1::{
    CompromiseKeyRequest, CompromiseKeyResponse, GetJwksRequest, GetJwksResponse, ListKeysRequest,
    ListKeysResponse, PublicKey, RetireKeyRequest, RetireKeyResponse, RotateKeysRequest,
    RotateKeysResponse, SigningAlgorithm, WatchKeysRequest, WatchKeysResponse,
};
use tonic::{Request, Response, Status};

/// Owns the keys: the open active signing key and the published set.
pub struct KeyManager {
    store: Arc<dyn KeyStore>,
    kek: Kek,
    clock: Arc<dyn Clock>,
    ring: Arc<KeyRing>,
    active: RwLock<Option<Arc<SigningKey>>>,
    /// How long verifiers may cache the JWKS, seconds.
    jwks_max_age: u32,
}

impl std::fmt::Debug for KeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyManager").finish_non_exhaustive()
    }
}

impl KeyManager {
    /// A manager publishing into `ring`.
    pub fn new(
        store: Arc<dyn KeyStore>,
        kek: Kek,
        clock: Arc<dyn Clock>,
        ring: Arc<KeyRing>,
        jwks_max_age: u32,
    ) -> Self {
        Self {
            store,
            kek,
            clock,
            ring,
            active: RwLock::new(None),
            jwks_max_age,
        }
    }

    /// Loads the keys; on first start creates an ES256 key, seals it and
    /// stores it as active. Then opens the active key and publishes the set.
    pub async fn bootstrap(&self) -> Result<()> {
        let mut keys = self.store.load_keys().await?;
        if !keys.iter().any(|k| k.state == KeyState::Active) {
            let kid = random_id();
            let material = KeyMaterial::generate(Algorithm::Es256, &kid)?;
            let now = self.clock.now();
            self.store
                .insert_key(&StoredKey {
                    sealed_private: self.kek.seal(&kid, &material.pkcs8)?,
                    public_jwk: material.public_jwk.to_string(),
                    kid,
                    algorithm: Algorithm::Es256,
                    state: KeyState::Active,
                    kek_id: self.kek.id().to_owned(),
                    created_at: now,
                    activated_at: Some(now),
                })
                .await?;
            // Re-read: if another instance won the race, its key is the one.
            keys = self.store.load_keys().await?;
            tracing::info!("created the first signing key (ES256)");
        }
        self.publish(&keys)
    }

    fn publish(&self, keys: &[StoredKey]) -> Result<()> {
        let active = keys
            .iter()
            .find(|k| k.state == KeyState::Active)
            .ok_or(DomainError::NoSigningKey)?;
        let pkcs8 = self.kek.open(&active.kid, &active.sealed_private)?;
        let signer = SigningKey::from_pkcs8(&active.kid, active.algorithm, &pkcs8)?;
        let mut published = Vec::new();
        for k in keys.iter().filter(|k| k.state.is_published()) {
            let jwk = serde_json::from_str(&k.public_jwk)
                .map_err(|_| DomainError::Internal("stored public JWK is not JSON".into()))?;
            published.push(VerifyingKey::from_jwk(jwk, k.state)?);
        }
        self.ring.replace(KeySet::new(published));
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(signer));
        Ok(())
    }

    /// The key that signs now.
    pub fn signing_key(&self) -> Result<Arc<SigningKey>> {
        self.active
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(DomainError::NoSigningKey)
    }

    /// The published set.
    pub fn key_set(&self) -> Arc<KeySet> {
        self.ring.current()
    }
}

/// `KeyService` over a [`KeyManager`].
#[derive(Debug, Clone)]
pub struct KeyApi {
    keys: Arc<KeyManager>,
}

impl KeyApi {
    /// The service.
    pub fn new(keys: Arc<KeyManager>) -> Self {
        Self { keys }
    }
}

fn algorithm(a: Algorithm) -> SigningAlgorithm {
    match a {
        Algorithm::Es256 => SigningAlgorithm::Es256,
        Algorithm::EdDsa => SigningAlgorithm::Eddsa,
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

#[tonic::async_trait]
impl KeyService for KeyApi {
    #[tracing::instrument(skip_all)]
    async fn get_jwks(
        &self,
        _request: Request<GetJwksRequest>,
    ) -> Result<Response<GetJwksResponse>, Status> {
        let set = self.keys.key_set();
        let jwks_json = set.jwks().to_string();
        let etag = format!(
            "\"{}\"",
            sha256(jwks_json.as_bytes())[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        let keys = set
            .keys()
            .iter()
            .map(|k| PublicKey {
                kid: k.kid().to_owned(),
                algorithm: algorithm(k.algorithm()).into(),
                state: state(k.state()).into(),
                jwk_json: k.jwk().to_string(),
                ..Default::default()
            })
            .collect();
        Ok(Response::new(GetJwksResponse {
            jwks_json,
            keys,
            etag,
            max_age_seconds: self.keys.jwks_max_age,
        }))
    }

    type WatchKeysStream =
        tokio_stream::wrappers::ReceiverStream<Result<WatchKeysResponse, Status>>;

    async fn watch_keys(
        &self,
        _request: Request<WatchKeysRequest>,
    ) -> Result<Response<Self::WatchKeysStream>, Status> {
        Err(unimplemented("WatchKeys"))
    }

    async fn list_keys(
        &self,
        _request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        Err(unimplemented("ListKeys"))
    }

    async fn rotate_keys(
        &self,
        _request: Request<RotateKeysRequest>,
    ) -> Result<Response<RotateKeysResponse>, Status> {
        Err(unimplemented("RotateKeys"))
    }

    async fn retire_key(
        &self,
        _request: Request<RetireKeyRequest>,
    ) -> Result<Response<RetireKeyResponse>, Status> {
        Err(unimplemented("RetireKey"))
    }

    async fn compromise_key(
        &self,
        _request: Request<CompromiseKeyRequest>,
    ) -> Result<Response<CompromiseKeyResponse>, Status> {
        Err(unimplemented("CompromiseKey"))
    }
}
