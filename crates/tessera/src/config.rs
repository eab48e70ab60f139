//! What an application is built from, and why building can fail.

use crate::kek::KekSource;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera_domain::Secret;
use tessera_domain::clock::Clock;
use tessera_domain::error::DomainError;
use tessera_domain::policy::Policy;
use tessera_domain::refresh::FamilyPolicy;
use tessera_domain::schedule::KeySchedule;
use tessera_edge::net::ConnLimits;
use tessera_edge::tls::TlsFiles;
use thiserror::Error;

/// Which services one process serves. The services always talk to each
/// other over gRPC, so splitting them changes only addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Every service on one port (the embedded default).
    All,
    /// `IssuerService`, `KeyService` and the HTTP JWKS.
    Issuer,
    /// `IntrospectionService` and `RevocationService`.
    Introspection,
}

/// Everything the application needs; built from flags and environment by
/// [`crate::cli`], or directly by tests (port 0, a manual clock).
#[derive(Clone)]
pub struct Config {
    /// Which services this process serves.
    pub role: Role,
    /// With `Role::Introspection`: the issuer to learn keys from.
    pub issuer_endpoint: Option<String>,
    /// With `Role::Issuer`: the revocation service to report reuse and
    /// compromise to.
    pub revocation_endpoint: Option<String>,
    /// With `Role::Introspection`: the least time between two key-set
    /// refetches caused by unknown kids.
    pub unknown_kid_refetch: Duration,
    /// Listen address.
    pub listen: SocketAddr,
    /// Data directory (SQLite file, generated KEK).
    pub data_dir: PathBuf,
    /// Postgres (or SQLite) URL; `None` means SQLite in the data directory.
    pub database_url: Option<String>,
    /// Redis URL; `None` means the in-process bus.
    pub redis_url: Option<String>,
    /// Prefix of Redis keys and channels.
    pub redis_prefix: String,
    /// With a `rediss://` Redis URL: the CA to trust and the client
    /// certificate to present.
    pub redis_tls: tessera_storage::RedisTls,
    /// Where the KEK comes from.
    pub kek: KekSource,
    /// The KEK being replaced, while a rewrap is under way.
    pub previous_kek: Option<KekSource>,
    /// Run migrations on start (always done for the embedded SQLite store).
    pub migrate: bool,
    /// Token policy.
    pub policy: Policy,
    /// Family lifetimes.
    pub families: FamilyPolicy,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// The key-rotation schedule (and the JWKS cache lifetime).
    pub keys: KeySchedule,
    /// How often each instance applies the schedule and reloads the key set
    /// other instances may have changed.
    pub key_tick: Duration,
    /// Allow plain TCP on a non-loopback address.
    pub allow_insecure_listen: bool,
    /// Bytes the verified-signature cache may hold (0: no cache).
    pub verify_cache_bytes: u64,
    /// How often a view pulls what it missed from a shared store.
    pub reconcile_interval: std::time::Duration,
    /// A view older than this (seconds) makes Verify NOT_SERVING.
    pub max_view_staleness: i64,
    /// The gateway routes file: with it, gateways may ask (forward-auth,
    /// Envoy `ext_authz`).
    pub gateway_routes_file: Option<PathBuf>,
    /// Postgres session time bounds (statement, lock wait, idle in
    /// transaction).
    pub store_timeouts: tessera_storage::StoreTimeouts,
    /// True when the issuer (`iss`) was configured, not derived from the
    /// listen address.
    pub issuer_set: bool,
    /// Who may call, TLS, and the limits of the port.
    pub edge: Edge,
}

/// The edge of the port: callers, TLS both ways, and limits.
#[derive(Clone)]
pub struct Edge {
    /// The callers file; `None` admits every caller (loopback only).
    pub callers_file: Option<PathBuf>,
    /// Server TLS (and mTLS) files; `None` serves plain TCP.
    pub tls: Option<TlsFiles>,
    /// The CA that signs the other Tessera services' certificates, for this
    /// instance's own calls to `https://` endpoints.
    pub peer_ca: Option<PathBuf>,
    /// The service key this instance presents on its own calls.
    pub service_key: Option<Secret>,
    /// Connection cap and handshake timeout.
    pub conn: ConnLimits,
    /// Calls of known callers in flight at once before new ones are shed.
    pub max_in_flight: usize,
    /// Anonymous calls to open endpoints in flight at once, all peers
    /// together.
    pub max_open_in_flight: usize,
    /// Anonymous calls to open endpoints in flight from one peer address.
    pub max_open_per_peer: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// The longest a stream (`WatchKeys`, `WatchRevocations`) lives before
    /// the server ends it (clients reconnect).
    pub stream_lifetime: Duration,
    /// The longest any call may run on the server.
    pub request_timeout: Duration,
    /// Join the caller's W3C trace context and open a span per call (set
    /// by the binary when OTLP export is on; see `telemetry.rs`).
    pub trace_context: bool,
}

impl Edge {
    /// The bounds of the edge's shedding.
    pub fn shed_limits(&self) -> tessera_edge::gate::ShedLimits {
        tessera_edge::gate::ShedLimits {
            max_in_flight: self.max_in_flight,
            max_open_in_flight: self.max_open_in_flight,
            max_open_per_peer: self.max_open_per_peer,
            body_timeout: self.body_timeout,
        }
    }
}

impl Default for Edge {
    fn default() -> Self {
        Self {
            callers_file: None,
            tls: None,
            peer_ca: None,
            service_key: None,
            conn: ConnLimits::default(),
            max_in_flight: 1024,
            max_open_in_flight: 256,
            max_open_per_peer: 32,
            body_timeout: Duration::from_secs(2),
            stream_lifetime: Duration::from_secs(3600),
            request_timeout: Duration::from_secs(10),
            trace_context: false,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("redis_prefix", &self.redis_prefix)
            .field("kek", &self.kek)
            .finish_non_exhaustive()
    }
}

/// Why the application could not start. Messages name the setting and carry
/// no secret (database and Redis URLs are echoed without their password).
#[derive(Debug, Error)]
pub enum AppError {
    /// A setting is wrong.
    #[error("configuration: {0}")]
    Config(String),
    /// A store or the domain failed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Binding or serving failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Server(String),
}
