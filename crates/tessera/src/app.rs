//! Wiring: stores, keys, services, health and reflection on one port.

use crate::config::{AppError, Config, Role};
use crate::kek;
use crate::tasks::{housekeeping, key_ticks, set_all, watch_store};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tessera_domain::keys::KeyRing;
use tessera_domain::kind::TokenKind;
use tessera_domain::purpose::purpose_ttl;
use tessera_domain::refresh::RefreshSecret;
use tessera_domain::revocation::MemoryRevocations;
use tessera_domain::store::{RevocationBus, RevocationStore};
use tessera_grpc::metrics::Metrics;
use tessera_introspection::{IntrospectionApi, KeyFollower, RevocationApi, Verifier};
use tessera_issuer::{IssuerApi, IssuerConfig, KeyApi, KeyManager};
use tessera_proto::v1::introspection_service_server::IntrospectionServiceServer;
use tessera_proto::v1::issuer_service_server::IssuerServiceServer;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::key_service_server::KeyServiceServer;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;
use tessera_proto::v1::revocation_service_server::RevocationServiceServer;
use tessera_storage::{Backend, LocalBus, RedisBus, SqlStore};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Channel;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// A built application: listener bound, stores open, keys loaded.
pub struct Application {
    listener: TcpListener,
    store: Arc<SqlStore>,
    routes: tonic::service::Routes,
    services: Vec<&'static str>,
    follower: Option<Arc<KeyFollower>>,
    ring: Arc<KeyRing>,
    key_manager: Option<Arc<KeyManager>>,
    health: HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.listener.local_addr().ok())
            .field("services", &self.services)
            .finish_non_exhaustive()
    }
}

fn create_data_dir(dir: &std::path::Path) -> Result<(), AppError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AppError::Config(format!("data_dir {}: {e}", dir.display())))
}

/// A key killed on another instance: stop signing with it now rather than at
/// the next schedule tick.
fn reload_on_kill(keys: Option<&Arc<KeyManager>>, e: &tessera_domain::revocation::RevocationEvent) {
    if let (tessera_domain::revocation::RevocationEvent::Key { .. }, Some(k)) = (e, keys) {
        let k = k.clone();
        tokio::spawn(async move {
            if let Err(e) = k.tick().await {
                tracing::warn!(error = %e, "key reload after a kill failed");
            }
        });
    }
}

fn lazy_channel(url: &str, setting: &str) -> Result<Channel, AppError> {
    tessera_grpc::net::endpoint(url)
        .map(|e| e.connect_lazy())
        .map_err(|e| AppError::Config(format!("{setting}: {e}")))
}

impl Application {
    /// Opens the stores, loads or creates the keys (or learns them from the
    /// issuer), and binds the listener.
    pub async fn build(cfg: Config) -> Result<Self, AppError> {
        if !cfg.listen.ip().is_loopback() && !cfg.allow_insecure_listen {
            return Err(AppError::Config(
                "listen: plain TCP is served on loopback only; pass --allow-insecure-listen to serve it elsewhere (behind TLS)".into(),
            ));
        }
        cfg.policy
            .validate()
            .map_err(|e| AppError::Config(e.to_string()))?;
        cfg.families
            .validate()
            .map_err(|e| AppError::Config(e.to_string()))?;
        // Keys sign access tokens and purpose tokens: the longest of them
        // bounds how long a key stays published after it stops signing.
        let longest_token = cfg
            .policy
            .access_ttl_max
            .max(purpose_ttl(TokenKind::EmailVerification).unwrap_or(0))
            .max(purpose_ttl(TokenKind::PasswordReset).unwrap_or(0));
        cfg.keys
            .validate(longest_token, cfg.policy.clock_skew)
            .map_err(|e| AppError::Config(e.to_string()))?;
        create_data_dir(&cfg.data_dir)?;

        let url = match &cfg.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}", cfg.data_dir.join("tessera.db").display()),
        };
        let store = Arc::new(SqlStore::connect(&url).await?);
        // The embedded store migrates on start; a shared database only when
        // asked (`tessera migrate` or --migrate), so an old binary never
        // migrates a database that newer instances are using.
        if store.backend() == Backend::Sqlite || cfg.migrate {
            store.migrate().await?;
        } else if !store.is_migrated().await? {
            return Err(AppError::Config(
                "database_url: the database has no Tessera schema, or an older one; run `tessera migrate --database-url …` (or serve with --migrate)".into(),
            ));
        }

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let listener = TcpListener::bind(cfg.listen).await?;
        let own = format!("http://{}", listener.local_addr()?);
        let mut routes = tonic::service::Routes::builder();
        let mut services = vec![""];
        let mut http = None;
        let mut key_manager = None;
        let ring = Arc::new(KeyRing::with_signature_cache(cfg.verify_cache_bytes));
        let margin = cfg.policy.family_margin();
        let metrics = Arc::new(Metrics::default());

        if cfg.role != Role::Introspection {
            // The issuer talks to the revocation service over gRPC (in the
            // `all` role: the same process, through its own port).
            let revocation_url = match (cfg.role, &cfg.revocation_endpoint) {
                (Role::All, _) => own.clone(),
                (_, Some(u)) => u.clone(),
                (_, None) => {
                    return Err(AppError::Config(
                        "revocation_endpoint: required with --role issuer".into(),
                    ));
                }
            };
            let revocations =
                RevocationServiceClient::new(lazy_channel(&revocation_url, "revocation_endpoint")?);
            let kek = kek::load(&cfg.kek, &cfg.data_dir).map_err(AppError::Config)?;
            let previous_kek = match &cfg.previous_kek {
                Some(source) => Some(kek::load(source, &cfg.data_dir).map_err(AppError::Config)?),
                None => None,
            };
            let keys = Arc::new(
                KeyManager::new(
                    store.clone(),
                    kek,
                    cfg.clock.clone(),
                    ring.clone(),
                    cfg.keys,
                )
                .with_previous_kek(previous_kek),
            );
            keys.bootstrap().await?;
            key_manager = Some(keys.clone());
            let refresh_secret =
                RefreshSecret::new(&keys.service_secret(tessera_issuer::REFRESH_SECRET).await?);
            tasks.push(key_ticks(keys.clone(), cfg.key_tick, stop_rx.clone()));
            http = Some(crate::http::routes(
                keys.clone(),
                cfg.policy.issuer.clone(),
                cfg.policy
                    .allowed_algorithms
                    .iter()
                    .map(|a| a.name())
                    .collect(),
            ));
            let key_api = KeyApi::new(
                keys.clone(),
                revocations.clone(),
                cfg.policy.access_ttl_max,
                stop_rx.clone(),
                metrics.clone(),
            );
            let issuer = IssuerApi::new(
                keys,
                store.clone(),
                IssuerConfig {
                    policy: cfg.policy.clone(),
                    families: cfg.families,
                    clock: cfg.clock.clone(),
                    refresh_secret,
                    revocations,
                    metrics: metrics.clone(),
                },
            );
            routes
                .add_service(IssuerServiceServer::new(issuer))
                .add_service(KeyServiceServer::new(key_api));
            services.extend(["tessera.v1.IssuerService", "tessera.v1.KeyService"]);
        }

        let view = Arc::new(MemoryRevocations::new());
        let (feed, _) = tokio::sync::broadcast::channel(1024);
        let mut follower = None;
        if cfg.role != Role::Issuer {
            store
                .in_force(cfg.clock.now(), margin, &|e| view.apply(e))
                .await?;
            let bus: Arc<dyn RevocationBus> = match &cfg.redis_url {
                Some(u) => {
                    let bus = RedisBus::connect(u, &cfg.redis_prefix).await?;
                    let (view, feed, keys) = (view.clone(), feed.clone(), key_manager.clone());
                    let apply = move |e: &tessera_domain::revocation::RevocationEvent| {
                        view.apply(e);
                        let _ = feed.send(e.clone());
                        reload_on_kill(keys.as_ref(), e);
                    };
                    tasks.push(bus.follow(
                        Arc::new(apply),
                        store.clone(),
                        cfg.clock.clone(),
                        margin,
                        stop_rx.clone(),
                    ));
                    Arc::new(bus)
                }
                None => Arc::new(LocalBus),
            };
            if cfg.role == Role::Introspection {
                let url = cfg.issuer_endpoint.clone().ok_or_else(|| {
                    AppError::Config("issuer_endpoint: required with --role introspection".into())
                })?;
                let f = Arc::new(KeyFollower::new(
                    KeyServiceClient::new(lazy_channel(&url, "issuer_endpoint")?),
                    ring.clone(),
                    view.clone(),
                    cfg.unknown_kid_refetch,
                ));
                // Without keys nothing verifies: the issuer must answer
                // within about 10 s (a liveness bound, retried with the
                // shared backoff).
                let mut backoff = tessera_domain::reconnect::Reconnect::default();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let mut fetched = f.fetch().await;
                while fetched.is_err() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(backoff.next_delay()).await;
                    fetched = f.fetch().await;
                }
                fetched.map_err(|e| {
                    AppError::Config(format!(
                        "issuer_endpoint: the issuer did not answer GetJwks ({:?})",
                        e.code()
                    ))
                })?;
                tasks.push(f.clone().follow(stop_rx.clone()));
                follower = Some(f);
            }
            let verifier = Verifier {
                keys: ring.clone(),
                view: view.clone(),
                store: store.clone(),
                bus,
                policy: Arc::new(cfg.policy.clone()),
                clock: cfg.clock.clone(),
                follower: follower.clone(),
                metrics: metrics.clone(),
                feed,
                shutdown: stop_rx.clone(),
            };
            routes
                .add_service(IntrospectionServiceServer::new(IntrospectionApi::new(
                    verifier.clone(),
                )))
                .add_service(RevocationServiceServer::new(RevocationApi::new(verifier)));
            services.extend([
                "tessera.v1.IntrospectionService",
                "tessera.v1.RevocationService",
            ]);
        }
        if let (Role::Issuer, Some(u), Some(keys)) = (cfg.role, &cfg.redis_url, &key_manager) {
            // An issuer-only instance has no revocation view, but it must
            // still stop signing with a key killed elsewhere at once.
            let bus = RedisBus::connect(u, &cfg.redis_prefix).await?;
            let keys = keys.clone();
            let apply = move |e: &tessera_domain::revocation::RevocationEvent| {
                reload_on_kill(Some(&keys), e)
            };
            tasks.push(bus.follow(
                Arc::new(apply),
                store.clone(),
                cfg.clock.clone(),
                margin,
                stop_rx.clone(),
            ));
        }
        tasks.push(housekeeping(
            view,
            ring.clone(),
            cfg.policy.clock_skew,
            store.clone(),
            cfg.clock.clone(),
            margin,
            stop_rx,
        ));

        let mut routes = routes.routes();
        let mut extra = crate::http::metrics(metrics);
        if let Some(http) = http {
            extra = extra.merge(http);
        }
        let grpc = std::mem::take(routes.axum_router_mut());
        *routes.axum_router_mut() = grpc.merge(extra);
        let health = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        // NOT_SERVING until `run` has seen the store answer.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        Ok(Self {
            listener,
            store,
            routes,
            services,
            follower,
            ring,
            key_manager,
            health,
            health_service,
            stop,
            tasks,
        })
    }

    /// The bound address (the real port when asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// In the introspection role: how many times the key set was fetched
    /// with `GetJwks` (start and unknown-kid refetches).
    pub fn key_fetches(&self) -> Option<Arc<KeyFollower>> {
        self.follower.clone()
    }

    /// In the issuer roles: the key manager (tests force schedule ticks
    /// through it instead of waiting for the timer).
    pub fn key_manager(&self) -> Option<Arc<KeyManager>> {
        self.key_manager.clone()
    }

    /// The key set Verify trusts and its verified-signature cache.
    pub fn key_ring(&self) -> Arc<KeyRing> {
        self.ring.clone()
    }

    /// Serves until `shutdown` resolves; then health turns NOT_SERVING, new
    /// connections are refused and in-flight calls finish.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), AppError> {
        let Self {
            listener,
            store,
            mut routes,
            services,
            health,
            health_service,
            stop,
            tasks,
            ..
        } = self;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(|e| AppError::Server(e.to_string()))?;
        // grpcurl 1.8 asks for v1alpha only.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(|e| AppError::Server(e.to_string()))?;
        routes = routes
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        let monitor = tokio::spawn(watch_store(
            store.clone(),
            health.clone(),
            services.clone(),
            stop.subscribe(),
        ));
        let shutting_down = {
            let health = health.clone();
            let stop = stop.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: health NOT_SERVING, finishing in-flight calls");
                let _ = stop.send(true);
                set_all(&health, &services, ServingStatus::NotServing).await;
            }
        };
        let result = tessera_grpc::net::server()
            // HTTP/1.1 too, for the JWKS endpoints.
            .accept_http1(true)
            .add_routes(routes)
            .serve_with_incoming_shutdown(tessera_grpc::net::incoming(listener), shutting_down)
            .await
            .map_err(|e| AppError::Server(e.to_string()));
        let _ = stop.send(true);
        let _ = monitor.await;
        for t in tasks {
            let _ = t.await;
        }
        store.close().await;
        result
    }
}
