//! The running server, top-down: [`Application::build`] opens the shared
//! infrastructure, builds the parts of the chosen topology (see
//! [`crate::topology`] and [`crate::roles::wire`]) and binds the listener;
//! [`Application::run`] stacks the layers and serves.

use crate::config::{AppError, Config, Edge};
use crate::health::{Readiness, set_all, watch_health};
use crate::roles::wire::{Keys, wire};
use crate::roles::{Base, Part};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tessera_domain::keys::KeyRing;
use tessera_edge::deadline::Deadline;
use tessera_edge::gate::{Authenticate, CallerRegistry, Shed};
use tessera_edge::observe::Observe;
use tessera_edge::tls::ServerTls;
use tessera_introspection::KeyFollower;
use tessera_issuer::KeyManager;
use tessera_storage::SqlStore;
use tessera_telemetry::audit::Denials;
use tessera_telemetry::metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::{HealthReporter, HealthService};

type HealthServer = tonic_health::pb::health_server::HealthServer<HealthService>;

/// A built application: listener bound, stores open, keys loaded.
pub struct Application {
    listener: TcpListener,
    store: Arc<SqlStore>,
    /// Every part of the topology, joined: routes, tasks, readiness checks.
    part: Part,
    stop: watch::Sender<bool>,
    edge: EdgeParts,
    /// For the accessors: the key set Verify trusts, and where it comes from.
    ring: Arc<KeyRing>,
    keys: Keys,
    /// Released once the store is closed.
    data_dir_lock: Option<std::fs::File>,
}

/// What `serve` stacks in front of the routes.
struct EdgeParts {
    callers: Arc<CallerRegistry>,
    tls: Option<Arc<ServerTls>>,
    metrics: Arc<Metrics>,
    /// Refusals at the edge, summarised into the audit trail.
    denials: Arc<Denials>,
    cfg: Edge,
}

/// At most one `caller_denied` audit event per kind of refusal (peer,
/// caller, RPC, reason) per this window.
const DENIALS_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.listener.local_addr().ok())
            .field("services", &self.part.services)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Opens the stores, loads or creates the keys (or learns them from the
    /// issuer), adds each role's services and binds the listener.
    pub async fn build(mut cfg: Config) -> Result<Self, AppError> {
        let listener = match TcpListener::bind(cfg.listen).await {
            Ok(listener) => listener,
            Err(e) => {
                let listened = answers(cfg.listen).await;
                return Err(crate::checks::bind_err(cfg.listen, &e, listened));
            }
        };
        if !cfg.issuer_set {
            // Derived from the bound address, so port 0 names the real port.
            cfg.policy.issuer =
                crate::issuer_file::derived(cfg.edge.tls.is_some(), listener.local_addr()?);
        }
        let topology = crate::checks::validate(&cfg)?;
        let base = Base::open(cfg).await?;
        let wired = wire(topology, &base).await?;
        let part = base.part().join(wired.part);
        let edge = EdgeParts {
            callers: base.callers,
            tls: base.server_tls,
            metrics: base.metrics,
            denials: Arc::new(Denials::default()),
            cfg: base.cfg.edge,
        };
        Ok(Self {
            listener,
            store: base.store,
            part,
            stop: base.stop,
            edge,
            ring: base.ring,
            keys: wired.keys,
            data_dir_lock: base.data_dir_lock,
        })
    }

    /// What the start-up line says about the port's guard: TLS on or off,
    /// and how many callers the callers file names (`None`: no file,
    /// every caller admitted).
    pub fn guard(&self) -> (bool, Option<usize>) {
        (self.edge.tls.is_some(), self.edge.callers.count())
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
        match &self.keys {
            Keys::Followed(follower) => Some(follower.clone()),
            Keys::Managed(_) => None,
        }
    }

    /// In the issuer roles: the key manager (tests force schedule ticks
    /// through it instead of waiting for the timer).
    pub fn key_manager(&self) -> Option<Arc<KeyManager>> {
        match &self.keys {
            Keys::Managed(keys) => Some(keys.clone()),
            Keys::Followed(_) => None,
        }
    }

    /// Every metric of this instance (for the OTLP exporter).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.edge.metrics.clone()
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
            part,
            stop,
            edge,
            data_dir_lock,
            ..
        } = self;
        let Part {
            grpc,
            http,
            services,
            tasks,
            readiness,
        } = part;
        let (health, health_service) = health().await;
        let ready = watch::channel(Readiness::default()).0;
        let http = http.merge(crate::health::routes(ready.subscribe()));
        let routes = routes(grpc, http, health_service, &services)?;
        let monitor = tokio::spawn(watch_health(
            readiness,
            health.clone(),
            services.clone(),
            (ready.clone(), edge.metrics.clone()),
            stop.subscribe(),
        ));
        let shutting_down = {
            let health = health.clone();
            let stop = stop.clone();
            async move {
                shutdown.await;
                tracing::info!("shutting down: health NOT_SERVING, finishing in-flight calls");
                let _ = stop.send(true);
                ready.send_modify(|r| r.stopping = true);
                set_all(&health, &services, ServingStatus::NotServing).await;
            }
        };
        let denials = edge.denials.clone();
        let denials = denials.summarise(DENIALS_WINDOW, stop.subscribe());
        let result = serve(listener, routes, edge, shutting_down).await;
        let _ = stop.send(true);
        let _ = monitor.await;
        let _ = denials.await;
        for t in tasks {
            let _ = t.await;
        }
        store.close().await;
        drop(data_dir_lock);
        result
    }
}

/// Whether something accepts connections at `addr` (an unspecified IP is
/// tried on loopback), within a second.
async fn answers(addr: SocketAddr) -> bool {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// gRPC health, NOT_SERVING until the watcher has seen the store answer.
async fn health() -> (HealthReporter, HealthServer) {
    let health = HealthReporter::new();
    let service = HealthServer::new(HealthService::from_health_reporter(health.clone()));
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    (health, service)
}

/// Every route of the port: the gRPC services with reflection and health,
/// and the HTTP routes beside them.
fn routes(
    grpc: tonic::service::Routes,
    http: axum::Router,
    health: HealthServer,
    services: &[&'static str],
) -> Result<tonic::service::Routes, AppError> {
    let mut routes = with_reflection(grpc)?.add_service(health);
    // Every gRPC service is in `routes` now: only gRPC requests reach
    // them, and the fallback is ours, not tonic's (HTTP 200 with
    // grpc-status 12 for any path, which a plain HTTP check reads as
    // healthy): UNIMPLEMENTED for gRPC, 404 for everything else.
    let grpc = std::mem::take(routes.axum_router_mut())
        .route_layer(axum::middleware::from_fn(crate::health::grpc_only));
    let served: std::sync::Arc<[&'static str]> = services.into();
    *routes.axum_router_mut() = grpc
        .merge(http)
        .fallback(move |req| crate::health::fallback(served.clone(), req));
    Ok(routes)
}

/// gRPC reflection (v1, and v1alpha, which grpcurl 1.8 asks for) of the
/// contract, of health, and of the `google.rpc` error details (so grpcurl
/// prints an ErrorInfo's reason instead of raw bytes).
fn with_reflection(routes: tonic::service::Routes) -> Result<tonic::service::Routes, AppError> {
    let configure = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tessera_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let server = |e: tonic_reflection::server::Error| AppError::Server(e.to_string());
    Ok(routes
        .add_service(configure().build_v1().map_err(server)?)
        .add_service(configure().build_v1alpha().map_err(server)?))
}

/// The server stack, outermost first. Every layer that lands goes here, in
/// this order, so a request meets them top-down:
/// 1. the connection (`tessera_edge::net`): the connection cap, accept
///    backoff, the handshake timeout, TLS (and mTLS), `TCP_NODELAY`, TCP
///    and HTTP/2 keepalive, HTTP/2 stream and header limits, and the
///    server-side deadline of every call;
/// 2. observation (`tessera_edge::observe`), outermost so that it sees
///    every answer, the refusals below included: once per call, the
///    latency histogram by method and status code, the server span joined
///    to the caller's `traceparent` (with OTLP export on), the debug log of
///    error statuses, and the shed counter or audit record of a refusal;
/// 3. caller authentication, the RPC right and the caller's rate (finer
///    rights are checked by each service), before shedding so that the
///    shedding knows whose call it is (authenticating costs a hash, no I/O);
/// 4. the deadline (`tessera_edge::deadline::Deadline`): the call runs to
///    its end in a task of its own, and its client is answered
///    DEADLINE_EXCEEDED (outcome unknown) at the server's request timeout
///    or the client's shorter `grpc-timeout`; the layers below run inside
///    the task, so a call keeps its concurrency place until it ends;
/// 5. the concurrency limits (`tessera_edge::gate::Shed`): a call takes its
///    place once its message has arrived (a body that does not arrive in
///    time ends the call), known callers and anonymous calls to open
///    endpoints have separate bounds (and the latter one per peer), and
///    past a bound calls are shed at once (`RESOURCE_EXHAUSTED`), never
///    queued; health is never shed;
/// 6. the routes: gRPC services (each with its message-size limit), and
///    HTTP/1.1 too for the JWKS endpoints and `/metrics`.
async fn serve(
    listener: TcpListener,
    routes: tonic::service::Routes,
    edge: EdgeParts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), AppError> {
    tessera_edge::net::server()
        .accept_http1(true)
        .layer(Observe::new(
            edge.metrics,
            edge.denials,
            edge.cfg.trace_context,
        ))
        .layer(Authenticate::new(edge.callers, edge.cfg.stream_lifetime))
        .layer(Deadline::new(edge.cfg.request_timeout))
        .layer(Shed::new(edge.cfg.shed_limits()))
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            tessera_edge::net::incoming(listener, edge.tls, edge.cfg.conn),
            shutdown,
        )
        .await
        .map_err(|e| AppError::Server(e.to_string()))
}
