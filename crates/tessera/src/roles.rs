//! What `Application::build` assembles, top-down: the infrastructure every
//! role shares ([`Shared`]: store, key ring, revocation view, metrics, the
//! stop signal), then one small builder per role that adds its routes. The
//! two roles meet only through the ports of `tessera_api::ports`: the issuer
//! reaches the revocation service through a [`Revoker`], the revocation
//! service kills keys through a [`KeyKiller`], and Verify reads keys from a
//! [`KeySource`] — each in process in the embedded mode (no TCP call to
//! itself), over gRPC in split roles.

use crate::checks::{check_kek, load_callers, open_store, validate};
use crate::config::{AppError, Config, Role};
use crate::kek;
use crate::tasks::{housekeeping, key_ticks, reconcile, reload};
use std::sync::Arc;
use std::time::Duration;
use tessera_api::client::{Bearer, PeerChannel};
use tessera_api::ports::{KeyKiller, Revoker};
use tessera_domain::keys::KeyRing;
use tessera_domain::reconnect::Reconnect;
use tessera_domain::refresh::RefreshSecret;
use tessera_domain::revocation::{MemoryRevocations, RevocationEvent};
use tessera_domain::store::RevocationBus;
use tessera_edge::gate::CallerRegistry;
use tessera_edge::tls::{ClientTls, ServerTls};
use tessera_introspection::{IntrospectionApi, KeyFollower, KeySource, RevocationApi, Verifier};
use tessera_issuer::{IssuerApi, IssuerConfig, KeyApi, KeyManager};
use tessera_proto::v1::introspection_service_server::IntrospectionServiceServer;
use tessera_proto::v1::issuer_service_server::IssuerServiceServer;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::key_service_server::KeyServiceServer;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;
use tessera_proto::v1::revocation_service_server::RevocationServiceServer;
use tessera_storage::{Backend, LocalBus, RedisBus, SqlStore};
use tessera_telemetry::metrics::Metrics;
use tokio::sync::watch;

/// What to do with a revocation learnt from the bus or the store.
type Apply = Arc<dyn Fn(&RevocationEvent) + Send + Sync>;

/// The infrastructure every role shares, and what the roles add to it.
pub(crate) struct Shared {
    pub cfg: Config,
    pub store: Arc<SqlStore>,
    pub ring: Arc<KeyRing>,
    pub view: Arc<MemoryRevocations>,
    pub metrics: Arc<Metrics>,
    pub stop: watch::Sender<bool>,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub routes: tonic::service::RoutesBuilder,
    /// gRPC service names, for health ("" is the whole server).
    pub services: Vec<&'static str>,
    /// HTTP routes beside gRPC on the same port.
    pub http: axum::Router,
    /// In the introspection role: the `WatchKeys` follower.
    pub follower: Option<Arc<KeyFollower>>,
    /// With a reconciled view: the age past which Verify is NOT_SERVING.
    pub max_view_age: Option<i64>,
    /// The callers in force (reloaded by a task).
    pub callers: Arc<CallerRegistry>,
    /// Server TLS, when the port serves TLS (reloaded by a task).
    pub server_tls: Option<Arc<ServerTls>>,
    /// What this instance presents on its calls to the other services.
    bearer: Bearer,
    client_tls: Option<ClientTls>,
}

/// At most one `verify_failures` audit event per caller per this window.
const AUDIT_WINDOW: Duration = Duration::from_secs(10);

/// Largest request message a token RPC decodes (tokens are at most 8 KiB;
/// extra claims a few KiB). tonic reads the length prefix first, so a
/// larger message is refused before it is read.
const TOKEN_RPC_MAX_MESSAGE: usize = 16 * 1024;

impl Shared {
    /// Validates `cfg`, opens (and if allowed migrates) the store.
    pub async fn open(mut cfg: Config) -> Result<Self, AppError> {
        validate(&cfg)?;
        let callers = Arc::new(CallerRegistry::default());
        match &cfg.edge.callers_file {
            Some(path) => callers.replace(load_callers(path)?),
            None => tracing::warn!(
                listen = %cfg.listen,
                "no callers file: every caller that can reach this loopback port is admitted (set --callers-file to require service keys)"
            ),
        }
        let server_tls = match &cfg.edge.tls {
            Some(files) => Some(Arc::new(
                ServerTls::load(files.clone()).map_err(AppError::Config)?,
            )),
            None => None,
        };
        let client_tls = match &cfg.edge.peer_ca {
            Some(ca) => {
                let identity = cfg
                    .edge
                    .tls
                    .as_ref()
                    .map(|t| (t.cert.as_path(), t.key.as_path()));
                Some(ClientTls::load(ca, identity).map_err(AppError::Config)?)
            }
            None => None,
        };
        let key = cfg
            .edge
            .service_key
            .as_ref()
            .map(|k| String::from_utf8_lossy(k.expose()).into_owned());
        let bearer = Bearer::new(key.as_deref()).map_err(AppError::Config)?;
        let store = Arc::new(open_store(&cfg).await?);
        crate::issuer_file::settle(&mut cfg)?;
        let metrics = Arc::new(Metrics::new(cfg.clock.clone()));
        Ok(Self {
            callers,
            server_tls,
            bearer,
            client_tls,
            ring: Arc::new(KeyRing::with_signature_cache(cfg.verify_cache_bytes)),
            view: Arc::new(MemoryRevocations::new()),
            http: crate::http::metrics(metrics.clone()),
            metrics,
            store,
            stop: watch::channel(false).0,
            tasks: Vec::new(),
            routes: tonic::service::Routes::builder(),
            services: vec![""],
            follower: None,
            max_view_age: None,
            cfg,
        })
    }

    fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Starts the key manager (loads or creates the keys) and its schedule.
    pub async fn key_manager(&mut self) -> Result<Arc<KeyManager>, AppError> {
        let cfg = &self.cfg;
        let kek = kek::load(&cfg.kek, &cfg.data_dir).map_err(AppError::Config)?;
        let previous = match &cfg.previous_kek {
            Some(source) => Some(kek::load(source, &cfg.data_dir).map_err(AppError::Config)?),
            None => None,
        };
        check_kek(&self.store, &kek, previous.as_ref()).await?;
        let keys = Arc::new(
            KeyManager::new(
                self.store.clone(),
                kek,
                cfg.clock.clone(),
                self.ring.clone(),
                cfg.keys,
            )
            .with_previous_kek(previous)
            .with_metrics(self.metrics.clone()),
        );
        keys.bootstrap().await?;
        let ticks = key_ticks(keys.clone(), cfg.key_tick, self.stopping());
        self.tasks.push(ticks);
        Ok(keys)
    }

    /// The introspection and revocation services. `keys`: the issuer's key
    /// manager in this process (the `all` role), else the issuer is reached
    /// over gRPC.
    pub async fn introspection_role(
        &mut self,
        keys: Option<&Arc<KeyManager>>,
    ) -> Result<Arc<RevocationApi>, AppError> {
        let (now, margin) = (self.cfg.clock.now(), self.cfg.policy.family_margin());
        self.metrics.watch_view(self.view.clone());
        let view = self.view.clone();
        let cursor = reload(&self.store, &|e| view.apply(e), now, margin).await?;
        let (feed, _) = tokio::sync::broadcast::channel(1024);
        // Every revocation this instance learns of, by any path: into the
        // view, to the WatchRevocations watchers, and a key kill reloads the
        // keys of an issuer in this process.
        let apply: Apply = {
            let (view, feed, keys) = (self.view.clone(), feed.clone(), keys.cloned());
            Arc::new(move |e: &RevocationEvent| {
                view.apply(e);
                let _ = feed.send(e.clone());
                reload_on_kill(keys.as_ref(), e);
            })
        };
        let bus = self.bus(apply.clone()).await?;
        if self.store.backend() == Backend::Postgres {
            self.metrics.view_reconciled(now);
            self.max_view_age = Some(self.cfg.max_view_staleness);
            let task = reconcile(
                self.store.clone(),
                apply,
                self.metrics.clone(),
                self.cfg.clock.clone(),
                margin,
                self.cfg.reconcile_interval,
                cursor,
                self.stopping(),
            );
            self.tasks.push(task);
        }
        let (source, killer): (Arc<dyn KeySource>, Arc<dyn KeyKiller>) = match keys {
            Some(k) => (self.ring.clone(), k.clone()),
            None => {
                let url = required(
                    &self.cfg.issuer_endpoint,
                    "issuer_endpoint",
                    "introspection",
                )?;
                let client = KeyServiceClient::new(self.channel(url, "issuer_endpoint")?);
                (self.follow_issuer(client.clone()).await?, Arc::new(client))
            }
        };
        let failures = Arc::new(tessera_telemetry::audit::VerifyFailures::default());
        let summaries = failures.clone().summarise(AUDIT_WINDOW, self.stopping());
        self.tasks.push(summaries);
        let verifier = Verifier {
            failures,
            keys: source,
            key_killer: killer,
            view: self.view.clone(),
            store: self.store.clone(),
            bus,
            policy: Arc::new(self.cfg.policy.clone()),
            clock: self.cfg.clock.clone(),
            metrics: self.metrics.clone(),
            feed,
            shutdown: self.stopping(),
        };
        let revocations = Arc::new(RevocationApi::new(verifier.clone()));
        self.routes
            .add_service(
                IntrospectionServiceServer::new(IntrospectionApi::new(verifier))
                    .max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE),
            )
            .add_service(
                RevocationServiceServer::from_arc(revocations.clone())
                    .max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE),
            );
        self.services.extend([
            "tessera.v1.IntrospectionService",
            "tessera.v1.RevocationService",
        ]);
        Ok(revocations)
    }

    /// The issuer and key services, and the HTTP JWKS. `revocations`: the
    /// revocation service in this process (the `all` role), else it is
    /// reached over gRPC.
    pub async fn issuer_role(
        &mut self,
        keys: &Arc<KeyManager>,
        revocations: Option<Arc<RevocationApi>>,
    ) -> Result<(), AppError> {
        let cfg = &self.cfg;
        let revoker: Arc<dyn Revoker> = match revocations {
            Some(api) => api,
            None => {
                let url = required(&cfg.revocation_endpoint, "revocation_endpoint", "issuer")?;
                Arc::new(RevocationServiceClient::new(
                    self.channel(url, "revocation_endpoint")?,
                ))
            }
        };
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
            self.stopping(),
            self.metrics.clone(),
        );
        let issuer = IssuerApi::new(
            keys.clone(),
            self.store.clone(),
            IssuerConfig {
                policy: cfg.policy.clone(),
                families: cfg.families,
                clock: cfg.clock.clone(),
                refresh_secret: RefreshSecret::new(&secret),
                revocations: revoker,
                metrics: self.metrics.clone(),
            },
        );
        self.http = std::mem::take(&mut self.http).merge(http);
        self.routes
            .add_service(
                IssuerServiceServer::new(issuer).max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE),
            )
            .add_service(
                KeyServiceServer::new(key_api).max_decoding_message_size(TOKEN_RPC_MAX_MESSAGE),
            );
        self.services
            .extend(["tessera.v1.IssuerService", "tessera.v1.KeyService"]);
        if cfg.role == Role::Issuer {
            // No revocation view here, but a key killed elsewhere must stop
            // signing at once.
            let keys = keys.clone();
            self.bus(Arc::new(move |e: &RevocationEvent| {
                reload_on_kill(Some(&keys), e)
            }))
            .await?;
        }
        Ok(())
    }

    /// The revocation bus: Redis when configured (followed: every event it
    /// carries goes to `apply`), else the in-process no-op.
    async fn bus(&mut self, apply: Apply) -> Result<Arc<dyn RevocationBus>, AppError> {
        let Some(url) = &self.cfg.redis_url else {
            return Ok(Arc::new(LocalBus));
        };
        let bus = RedisBus::connect(url, &self.cfg.redis_prefix, &self.cfg.redis_tls).await?;
        let follow = bus.follow(
            apply,
            self.store.clone(),
            self.cfg.clock.clone(),
            self.cfg.policy.family_margin(),
            self.stopping(),
        );
        self.tasks.push(follow);
        Ok(Arc::new(bus))
    }

    /// Learns the key set from the issuer (`GetJwks`, then `WatchKeys`).
    async fn follow_issuer(
        &mut self,
        client: KeyServiceClient<PeerChannel>,
    ) -> Result<Arc<dyn KeySource>, AppError> {
        let follower = Arc::new(KeyFollower::new(
            client,
            self.ring.clone(),
            self.view.clone(),
            self.cfg.unknown_kid_refetch,
        ));
        // Without keys nothing verifies: the issuer must answer within
        // about 10 s (a liveness bound, retried with the shared backoff).
        let mut backoff = Reconnect::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut fetched = follower.fetch().await;
        while fetched.is_err() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(backoff.next_delay()).await;
            fetched = follower.fetch().await;
        }
        fetched.map_err(|e| {
            AppError::Config(format!(
                "issuer_endpoint: the issuer did not answer GetJwks ({:?})",
                e.code()
            ))
        })?;
        self.tasks.push(follower.clone().follow(self.stopping()));
        self.follower = Some(follower.clone());
        Ok(Arc::new(follower))
    }

    /// Once a minute: the view, the signature cache and the store purged.
    pub fn housekeeping(&mut self) {
        let cfg = &self.cfg;
        let task = housekeeping(
            self.view.clone(),
            self.ring.clone(),
            cfg.policy.clock_skew,
            self.store.clone(),
            cfg.clock.clone(),
            cfg.policy.family_margin(),
            self.stopping(),
        );
        self.tasks.push(task);
    }
}

fn required<'a>(value: &'a Option<String>, setting: &str, role: &str) -> Result<&'a str, AppError> {
    value
        .as_deref()
        .ok_or_else(|| AppError::Config(format!("{setting}: required with --role {role}")))
}

impl Shared {
    /// A lazily connected channel to another service, presenting this
    /// instance's service key and verifying its certificate.
    fn channel(&self, url: &str, setting: &str) -> Result<PeerChannel, AppError> {
        tessera_edge::net::channel(&self.bearer, url, self.client_tls.as_ref())
            .map_err(|e| AppError::Config(format!("{setting}: {e}")))
    }
}

/// A key killed on another instance: stop signing with it now rather than at
/// the next schedule tick.
fn reload_on_kill(keys: Option<&Arc<KeyManager>>, e: &RevocationEvent) {
    if let (RevocationEvent::Key { .. }, Some(k)) = (e, keys) {
        let k = k.clone();
        tokio::spawn(async move {
            if let Err(e) = k.tick().await {
                tracing::warn!(error = %e, "key reload after a kill failed");
            }
        });
    }
}
