//! What `Application::build` assembles, top-down: the infrastructure every
//! role shares ([`Base`]: store, key ring, revocation view, metrics, the
//! stop signal, the edge's callers and TLS), then one function per role
//! that returns its [`Part`] ([`issuer`], [`introspection`]);
//! [`crate::topology`] says which run and [`wire`] builds and joins them.
//! The configuration, the topology and the start-up checks sit below this
//! module and the application above it, so dependencies point one way.
//!
//! The two roles meet only through the ports of `tessera_api::ports`: the
//! issuer reaches the revocation service through a `Revoker`, the
//! revocation service kills keys through a `KeyKiller`, and Verify reads
//! keys from a `KeySource` — each in process in the all-in-one topology (no
//! TCP call to itself), over gRPC in split roles (the README's "Separate
//! issuer and introspection processes").

pub(crate) mod introspection;
pub(crate) mod issuer;
mod part;
pub(crate) mod wire;

pub(crate) use part::Part;

use crate::checks::{load_callers, open_store};
use crate::config::{AppError, Config};
use crate::readiness::StoreAnswers;
use crate::tasks::housekeeping;
use std::sync::Arc;
use std::time::Duration;
use tessera_api::client::{Bearer, PeerChannel};
use tessera_domain::keys::KeyRing;
use tessera_domain::revocation::{MemoryRevocations, RevocationEvent};
use tessera_domain::store::RevocationBus;
use tessera_edge::gate::CallerRegistry;
use tessera_edge::tls::{ClientTls, ServerTls};
use tessera_storage::{LocalBus, RedisBus, SqlStore};
use tessera_telemetry::metrics::Metrics;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What to do with a revocation learnt from the bus or the store.
pub(crate) type Apply = Arc<dyn Fn(&RevocationEvent) + Send + Sync>;

/// At most one `verify_failures` audit event per caller per this window.
const AUDIT_WINDOW: Duration = Duration::from_secs(10);

/// Largest request message a token RPC decodes (tokens are at most 8 KiB;
/// extra claims a few KiB). tonic reads the length prefix first, so a
/// larger message is refused before it is read.
const TOKEN_RPC_MAX_MESSAGE: usize = 16 * 1024;

/// The infrastructure every role shares. The roles read it; what they add
/// goes into their own [`Part`].
pub(crate) struct Base {
    pub cfg: Config,
    pub store: Arc<SqlStore>,
    pub ring: Arc<KeyRing>,
    /// The revocation view: Verify's, and purged by housekeeping (empty in
    /// the issuer role, where nothing feeds it).
    pub view: Arc<MemoryRevocations>,
    pub metrics: Arc<Metrics>,
    pub stop: watch::Sender<bool>,
    /// The callers in force (reloaded by a task).
    pub callers: Arc<CallerRegistry>,
    /// Server TLS, when the port serves TLS (reloaded by a task).
    pub server_tls: Option<Arc<ServerTls>>,
    /// What this instance presents on its calls to the other services.
    bearer: Bearer,
    client_tls: Option<ClientTls>,
    /// The embedded store's data directory, held for this process alone
    /// ([`crate::checks::lock_data_dir`]).
    pub data_dir_lock: Option<std::fs::File>,
}

impl Base {
    /// Loads the edge's files and opens (and if allowed migrates) the store;
    /// `cfg` has passed [`crate::checks::validate`].
    pub async fn open(mut cfg: Config) -> Result<Self, AppError> {
        let callers = Arc::new(CallerRegistry::default());
        match &cfg.edge.callers_file {
            Some(path) => callers.replace(load_callers(path)?),
            None if cfg.listen.ip().is_loopback() => tracing::warn!(
                listen = %cfg.listen,
                "no callers file: every caller that can reach this loopback port is admitted (set --callers-file to require service keys)"
            ),
            None => tracing::warn!(
                listen = %cfg.listen,
                "no callers file and --allow-insecure-listen: every caller that can reach this address is admitted, from any host (set --callers-file to require service keys)"
            ),
        }
        let server_tls = match &cfg.edge.tls {
            Some(files) => Some(Arc::new(
                ServerTls::load(files.clone()).map_err(AppError::Config)?,
            )),
            None => None,
        };
        let (bearer, client_tls) = peer_identity(&cfg)?;
        if cfg.database_url.is_none() {
            crate::checks::create_data_dir(&cfg.data_dir)?;
        }
        // The data directory, or a sqlite: URL's: one server per SQLite
        // file, however it is named.
        let data_dir_lock =
            match crate::checks::sqlite_dir(cfg.database_url.as_deref(), &cfg.data_dir) {
                Some(dir) => Some(crate::checks::lock_data_dir(&dir)?),
                None => None,
            };
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
            metrics,
            store,
            stop: watch::channel(false).0,
            data_dir_lock,
            cfg,
        })
    }

    /// What every instance serves whatever its role: `/metrics`, health of
    /// the whole server (""), the store check, housekeeping and the reloads
    /// of the edge's files.
    pub fn part(&self) -> Part {
        let cfg = &self.cfg;
        let housekeeping = housekeeping(
            self.view.clone(),
            self.ring.clone(),
            cfg.policy.clock_skew,
            self.store.clone(),
            cfg.clock.clone(),
            cfg.policy.family_margin(),
            self.stopping(),
        );
        let watcher = crate::edge::watch(
            cfg.edge.callers_file.clone(),
            self.callers.clone(),
            self.server_tls.clone(),
            self.stopping(),
        );
        Part {
            http: crate::http::metrics(self.metrics.clone()),
            services: vec![""],
            tasks: vec![housekeeping, watcher],
            readiness: vec![Box::new(StoreAnswers(self.store.clone()))],
            ..Part::default()
        }
    }

    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// A lazily connected channel to another service, presenting this
    /// instance's service key and verifying its certificate.
    pub fn channel(&self, url: &str, setting: &str) -> Result<PeerChannel, AppError> {
        tessera_edge::net::channel(&self.bearer, url, self.client_tls.as_ref())
            .map_err(|e| AppError::Config(format!("{setting}: {e}")))
    }

    /// The revocation bus: Redis when configured (followed by a task added
    /// to `tasks`: every event it carries goes to `apply`), else the
    /// in-process no-op.
    pub async fn bus(
        &self,
        apply: Apply,
        tasks: &mut Vec<JoinHandle<()>>,
    ) -> Result<Arc<dyn RevocationBus>, AppError> {
        let Some(url) = &self.cfg.redis_url else {
            return Ok(Arc::new(LocalBus));
        };
        let bus = RedisBus::connect(url, &self.cfg.redis_prefix, &self.cfg.redis_tls)
            .await?
            .with_token_life(crate::checks::longest_token(&self.cfg) + self.cfg.policy.clock_skew);
        tasks.push(bus.follow(
            apply,
            self.store.clone(),
            self.cfg.clock.clone(),
            self.cfg.policy.family_margin(),
            self.stopping(),
        ));
        tasks.push(bus.repair(
            self.store.clone(),
            self.cfg.clock.clone(),
            self.cfg.policy.family_margin(),
            self.stopping(),
        ));
        Ok(Arc::new(bus))
    }
}

/// The service key and client TLS this instance presents on its own calls.
fn peer_identity(cfg: &Config) -> Result<(Bearer, Option<ClientTls>), AppError> {
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
    Ok((bearer, client_tls))
}
