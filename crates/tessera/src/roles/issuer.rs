//! The issuer's part: the key manager (which loads or creates the keys and
//! applies their schedule), `IssuerService`, `KeyService` and the HTTP
//! JWKS. It reaches the revocation service through a [`Revoker`]: the
//! service itself in the all-in-one topology, a gRPC client in the issuer
//! role.

use super::{Apply, Base, Part, TOKEN_RPC_MAX_MESSAGE};
use crate::checks::check_kek;
use crate::config::AppError;
use crate::kek;
use crate::readiness::{PublishedKeys, SigningKey};
use crate::tasks::key_ticks;
use std::sync::Arc;
use tessera_api::ports::Revoker;
use tessera_domain::refresh::RefreshSecret;
use tessera_domain::revocation::RevocationEvent;
use tessera_issuer::{IssuerApi, IssuerConfig, KeyApi, KeyManager};
use tessera_proto::v1::issuer_service_server::IssuerServiceServer;
use tessera_proto::v1::key_service_server::KeyServiceServer;
use tokio::task::JoinHandle;

/// The key manager, started: the keys loaded (or created) and the task that
/// applies their schedule.
pub(crate) struct Signer {
    pub keys: Arc<KeyManager>,
    ticks: JoinHandle<()>,
}

/// Starts the key manager (loads or creates the keys) and its schedule.
pub(crate) async fn key_manager(base: &Base) -> Result<Signer, AppError> {
    let cfg = &base.cfg;
    let kek = kek::load(&cfg.kek, &cfg.data_dir).map_err(AppError::Config)?;
    let previous = match &cfg.previous_kek {
        Some(source) => Some(kek::load(source, &cfg.data_dir).map_err(AppError::Config)?),
        None => None,
    };
    check_kek(&base.store, &kek, previous.as_ref()).await?;
    let keys = Arc::new(
        KeyManager::new(
            base.store.clone(),
            kek,
            cfg.clock.clone(),
            base.ring.clone(),
            cfg.keys,
        )
        .with_previous_kek(previous)
        .with_metrics(base.metrics.clone()),
    );
    keys.bootstrap().await?;
    let ticks = key_ticks(keys.clone(), cfg.key_tick, base.stopping());
    Ok(Signer { keys, ticks })
}

/// The issuer and key services, and the HTTP JWKS; ready once a key set is
/// published and a key signs.
pub(crate) async fn part(
    base: &Base,
    signer: Signer,
    revoker: Arc<dyn Revoker>,
) -> Result<Part, AppError> {
    let (cfg, keys) = (&base.cfg, &signer.keys);
    let secret = keys.service_secret(tessera_issuer::REFRESH_SECRET).await?;
    let algorithms = cfg.policy.allowed_algorithms.iter().map(|a| a.name());
    let http = crate::http::routes(
        keys.clone(),
        cfg.policy.issuer.clone(),
        algorithms.collect(),
    );
    let key_api = KeyApi::new(
        keys.clone(),
        revoker.clone(),
        cfg.policy.access_ttl_max,
        base.stopping(),
        base.metrics.clone(),
    );
    let issuer = IssuerApi::new(
        keys.clone(),
        base.store.clone(),
        IssuerConfig {
            policy: cfg.policy.clone(),
            families: cfg.families,
            clock: cfg.clock.clone(),
            refresh_secret: RefreshSecret::new(&secret),
            revocations: revoker,
            metrics: base.metrics.clone(),
        },
    );
    let part = Part {
        http,
        tasks: vec![signer.ticks],
        readiness: vec![
            Box::new(PublishedKeys(base.ring.clone())),
            Box::new(SigningKey(keys.clone())),
        ],
        ..Part::default()
    };
    Ok(part
        .serve(IssuerServiceServer::new(issuer).max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE))
        .serve(KeyServiceServer::new(key_api).max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE)))
}

/// In the issuer role, which has no revocation view: follows the bus so
/// that a key killed elsewhere stops signing at once.
pub(crate) async fn follow_kills(
    base: &Base,
    keys: &Arc<KeyManager>,
    part: &mut Part,
) -> Result<(), AppError> {
    base.bus(reload_on_kill(keys.clone()), &mut part.tasks)
        .await
        .map(drop)
}

/// A key killed on another instance: stop signing with it now rather than at
/// the next schedule tick.
pub(crate) fn reload_on_kill(keys: Arc<KeyManager>) -> Apply {
    Arc::new(move |e: &RevocationEvent| {
        if let RevocationEvent::Key { .. } = e {
            let k = keys.clone();
            tokio::spawn(async move {
                if let Err(e) = k.tick().await {
                    tracing::warn!(error = %e, "key reload after a kill failed");
                }
            });
        }
    })
}
