//! Command-line and environment configuration (`TESSERA_…`).

use crate::config::Config;
use crate::kek::{KekSource, parse_kek};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tessera_domain::clock::SystemClock;
use tessera_domain::keys::Algorithm;
use tessera_domain::policy::Policy;
use tessera_domain::refresh::FamilyPolicy;
use tessera_domain::schedule::KeySchedule;

mod edge;
pub use edge::{ClientAuthArg, EdgeArgs};

/// Tessera issues, verifies, refreshes and revokes JSON Web Tokens for
/// internal services over gRPC, and rotates the keys that sign them.
#[derive(Debug, Parser)]
#[command(
    name = "tessera",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TESSERA_COMMIT"), ")"),
    after_help = "Exit codes: 0 success (healthcheck: SERVING; token inspect: nothing refused), \
                  1 failure (healthcheck: NOT_SERVING; token inspect: a refusal), 2 usage error.\n\
                  Each option's TESSERA_… variable is shown beside it; `tessera <command> --help` for more."
)]
pub struct Cli {
    /// Log format on stderr: `text` (coloured only on a terminal) or
    /// `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "TESSERA_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::telemetry::LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve every service on one port (embedded SQLite store by default).
    Serve(Box<ServeArgs>),
    /// Apply the database migrations and exit (the database must exist:
    /// `createdb` it first).
    Migrate {
        /// Database URL (postgres://… or sqlite://…).
        #[arg(long, env = "TESSERA_DATABASE_URL")]
        database_url: String,
    },
    /// Revoke a token, a session, a subject or a signing key on a running
    /// server (RevocationService.Revoke).
    Revoke(Box<crate::revoke_cli::RevokeArgs>),
    /// Read a token without trusting it.
    #[command(subcommand)]
    Token(crate::inspect_cli::TokenCommand),
    /// List, rotate and kill signing keys on a running server; re-seal the
    /// stored keys under a new KEK.
    #[command(subcommand)]
    Keys(crate::keys_cli::KeysCommand),
    /// Make service keys for the callers file.
    #[command(subcommand)]
    Callers(crate::callers_cli::CallersCommand),
    /// Print SERVING and exit 0 when the server reports SERVING (gRPC
    /// health of the whole server), else print NOT_SERVING and exit 1.
    Healthcheck {
        #[command(flatten)]
        remote: crate::remote::RemoteArgs,
        /// Keep asking, every 250 ms, until the server reports SERVING or
        /// this many seconds have passed; then print the last answer (and,
        /// when the server could not be asked, why). 0: ask once.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        wait: u64,
    },
    /// Print a shell completion script to stdout, e.g.
    /// `tessera completions bash > /etc/bash_completion.d/tessera`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `tessera man | man -l -`;
    /// with --dir, write tessera.1 and one page per command there.
    Man {
        /// Directory to write every page into.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// `tessera serve` options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Which services to serve: all (default), issuer or introspection.
    #[arg(long, env = "TESSERA_ROLE", value_enum, default_value = "all")]
    pub role: crate::config::Role,
    /// With --role introspection: the issuer to learn keys from (GetJwks,
    /// then the WatchKeys stream).
    #[arg(long, env = "TESSERA_ISSUER_ENDPOINT")]
    pub issuer_endpoint: Option<String>,
    /// With --role issuer: the revocation service to report refresh-token
    /// reuse, password resets and key compromise to.
    #[arg(long, env = "TESSERA_REVOCATION_ENDPOINT")]
    pub revocation_endpoint: Option<String>,
    /// With --role introspection: least seconds between two key-set
    /// refetches caused by tokens with unknown kids.
    #[arg(long, env = "TESSERA_UNKNOWN_KID_REFETCH", default_value_t = 10)]
    pub unknown_kid_refetch: u64,
    /// Address to listen on (plain TCP: loopback only unless
    /// --allow-insecure-listen).
    #[arg(long, env = "TESSERA_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,
    /// Data directory: the SQLite store and the generated KEK live here.
    #[arg(long, env = "TESSERA_DATA_DIR", default_value = "tessera-data")]
    pub data_dir: PathBuf,
    /// Postgres URL for the durable store instead of SQLite in the data dir.
    /// TLS as with libpq: `?sslmode=verify-full&sslrootcert=/path/ca.pem`.
    #[arg(long, env = "TESSERA_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL for the deny-list and revocation fan-out; `rediss://…`
    /// for TLS.
    #[arg(long, env = "TESSERA_REDIS_URL")]
    pub redis_url: Option<String>,
    /// With a rediss:// URL: PEM file of the CA(s) that sign the Redis
    /// server's certificate (default: the webpki/Mozilla roots).
    #[arg(long, env = "TESSERA_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// With a rediss:// URL: PEM client certificate, for a Redis that asks
    /// for one (`tls-auth-clients yes`).
    #[arg(long, env = "TESSERA_REDIS_CLIENT_CERT", requires = "redis_client_key")]
    pub redis_client_cert: Option<PathBuf>,
    /// The private key of --redis-client-cert (PEM).
    #[arg(long, env = "TESSERA_REDIS_CLIENT_KEY", requires = "redis_client_cert")]
    pub redis_client_key: Option<PathBuf>,
    /// Prefix of every Redis key and channel.
    #[arg(long, env = "TESSERA_REDIS_PREFIX", default_value = "tessera:")]
    pub redis_prefix: String,
    /// File holding the key-encryption key (base64url of 32 bytes). The KEK
    /// may also come from TESSERA_KEK; without either, one is generated in
    /// the data directory.
    #[arg(long, env = "TESSERA_KEK_FILE")]
    pub kek_file: Option<PathBuf>,
    /// File with the previous KEK, while `tessera keys rewrap` moves the
    /// keys to the current one (or TESSERA_KEK_PREVIOUS).
    #[arg(long, env = "TESSERA_PREVIOUS_KEK_FILE")]
    pub previous_kek_file: Option<PathBuf>,
    /// The `iss` of every token. Default: the one the data directory's
    /// first start used (kept in <data-dir>/issuer), else http://<listen>
    /// (https:// with --tls-cert).
    #[arg(long, env = "TESSERA_ISSUER")]
    pub issuer: Option<String>,
    /// Apply migrations on start (always done for the embedded SQLite store).
    #[arg(long, env = "TESSERA_MIGRATE")]
    pub migrate: bool,
    /// Default access-token lifetime, seconds.
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_TTL", default_value_t = 900)]
    pub access_token_ttl: i64,
    /// Longest access-token lifetime a caller may ask for, seconds.
    #[arg(long, env = "TESSERA_ACCESS_TOKEN_MAX_TTL", default_value_t = 3600)]
    pub access_token_max_ttl: i64,
    /// Tolerated clock skew, seconds (0 to 300).
    #[arg(long, env = "TESSERA_CLOCK_SKEW", default_value_t = 30)]
    pub clock_skew: i64,
    /// Extra claim names callers may add to access tokens, comma-separated.
    #[arg(long, env = "TESSERA_EXTRA_CLAIMS", value_delimiter = ',')]
    pub extra_claims: Vec<String>,
    /// A refresh-token family unused this long ends, seconds (60 s to 90 days).
    #[arg(long, env = "TESSERA_FAMILY_IDLE_TIMEOUT", default_value_t = 14 * 24 * 3600)]
    pub family_idle_timeout: i64,
    /// A family ends this long after login, seconds (1 h to 365 days).
    #[arg(long, env = "TESSERA_FAMILY_LIFETIME", default_value_t = 30 * 24 * 3600)]
    pub family_lifetime: i64,
    /// Window in which the immediate predecessor of a refresh token yields
    /// the same successor again, seconds (at most 60). It must outlast the
    /// request timeout by 5 s, so that a Refresh whose answer was lost (a
    /// deadline, a cut connection) can be retried and get the same
    /// successor; 0 turns replay off (a lost answer then ends the session).
    #[arg(long, env = "TESSERA_REFRESH_GRACE", default_value_t = 30)]
    pub refresh_grace: i64,
    /// How long verifiers may cache the JWKS, seconds.
    #[arg(long, env = "TESSERA_JWKS_MAX_AGE", default_value_t = 300)]
    pub jwks_max_age: i64,
    /// Algorithm of new signing keys: ES256, EdDSA, RS256 or PS256.
    #[arg(long, env = "TESSERA_KEY_ALGORITHM", default_value = "ES256")]
    pub key_algorithm: String,
    /// How long a key signs before the next takes over, seconds.
    #[arg(long, env = "TESSERA_KEY_ROTATION_PERIOD", default_value_t = 30 * 24 * 3600)]
    pub key_rotation_period: i64,
    /// How long a new key is published before it signs, seconds (at least
    /// the JWKS cache lifetime plus 60).
    #[arg(long, env = "TESSERA_KEY_PUBLISH_AHEAD", default_value_t = 3600)]
    pub key_publish_ahead: i64,
    /// How long a key stays published after it stops signing, seconds (at
    /// least the longest token lifetime plus the clock skew).
    #[arg(long, env = "TESSERA_KEY_RETIRE_AFTER", default_value_t = 25 * 3600)]
    pub key_retire_after: i64,
    /// Allow plain TCP on a non-loopback address (put TLS in front of it).
    #[arg(long, env = "TESSERA_ALLOW_INSECURE_LISTEN")]
    pub allow_insecure_listen: bool,
    /// Memory for the verified-signature cache, MiB: a token seen before
    /// skips only its signature check (0 turns the cache off).
    #[arg(long, env = "TESSERA_VERIFY_CACHE_MIB", default_value_t = 32)]
    pub verify_cache_mib: u64,
    /// With a shared database: how often each revocation view pulls the
    /// revocations it missed from the store, milliseconds (its staleness
    /// bound whatever happens to Redis).
    #[arg(long, env = "TESSERA_RECONCILE_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    pub reconcile_interval_ms: u64,
    /// With a shared database: a verifier whose revocation view has not
    /// caught up with the store for this long reports NOT_SERVING for
    /// IntrospectionService (load balancers route away), seconds.
    #[arg(long, env = "TESSERA_MAX_VIEW_STALENESS", default_value_t = 30,
          value_parser = clap::value_parser!(i64).range(1..=3600))]
    pub max_view_staleness: i64,
    /// The gateway routes file (TOML: host and path prefix to the audience
    /// and scopes a token must carry). With it, the introspection role
    /// answers gateways: HTTP forward-auth at /gateway/auth and Envoy's
    /// gRPC ext_authz. Reloaded on SIGHUP and when it changes.
    #[arg(long, env = "TESSERA_GATEWAY_ROUTES_FILE")]
    pub gateway_routes_file: Option<std::path::PathBuf>,
    /// Postgres: the longest one statement may run, lock waits included,
    /// milliseconds (set as `statement_timeout` on every connection).
    #[arg(long, env = "TESSERA_PG_STATEMENT_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub pg_statement_timeout_ms: u64,
    /// Postgres: the longest a statement waits for a row lock, milliseconds
    /// (`lock_timeout`; a hot refresh-token family answers UNAVAILABLE fast
    /// instead of holding the pool).
    #[arg(long, env = "TESSERA_PG_LOCK_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub pg_lock_timeout_ms: u64,
    /// Postgres: a session idle inside a transaction this long is ended by
    /// the server, milliseconds (`idle_in_transaction_session_timeout`).
    #[arg(long, env = "TESSERA_PG_IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub pg_idle_in_transaction_timeout_ms: u64,
    /// Write the audit events (one JSON object per line, target
    /// `tessera::audit`) to this file (appended, created 0600) instead of
    /// stderr.
    #[arg(long, env = "TESSERA_AUDIT_LOG", value_name = "PATH")]
    pub audit_log: Option<PathBuf>,
    /// Callers, TLS and limits.
    #[command(flatten)]
    pub edge: EdgeArgs,
}

impl ServeArgs {
    /// The application configuration these options describe.
    pub fn into_config(self: Box<Self>) -> Result<Config, String> {
        let this = *self;
        this.into_config_inner()
    }

    fn into_config_inner(self) -> Result<Config, String> {
        let (kek, previous_kek) = self.keks()?;
        let issuer_set = self.issuer.is_some();
        let policy = self.policy();
        let keys = self.key_schedule()?;
        Ok(Config {
            role: self.role,
            issuer_endpoint: self.issuer_endpoint,
            revocation_endpoint: self.revocation_endpoint,
            unknown_kid_refetch: std::time::Duration::from_secs(self.unknown_kid_refetch),
            previous_kek,
            listen: self.listen,
            data_dir: self.data_dir,
            database_url: self.database_url,
            redis_url: self.redis_url,
            redis_prefix: self.redis_prefix,
            redis_tls: tessera_storage::RedisTls {
                ca_file: self.redis_ca_file,
                client_cert_file: self.redis_client_cert,
                client_key_file: self.redis_client_key,
            },
            kek,
            migrate: self.migrate,
            policy,
            families: FamilyPolicy {
                idle_timeout: self.family_idle_timeout,
                absolute_lifetime: self.family_lifetime,
                grace: self.refresh_grace,
            },
            clock: Arc::new(SystemClock),
            keys,
            key_tick: std::time::Duration::from_secs(5),
            allow_insecure_listen: self.allow_insecure_listen,
            verify_cache_bytes: self.verify_cache_mib.saturating_mul(1 << 20),
            reconcile_interval: std::time::Duration::from_millis(self.reconcile_interval_ms),
            max_view_staleness: self.max_view_staleness,
            gateway_routes_file: self.gateway_routes_file,
            store_timeouts: tessera_storage::StoreTimeouts {
                statement: std::time::Duration::from_millis(self.pg_statement_timeout_ms),
                lock: std::time::Duration::from_millis(self.pg_lock_timeout_ms),
                idle_in_transaction: std::time::Duration::from_millis(
                    self.pg_idle_in_transaction_timeout_ms,
                ),
            },
            issuer_set,
            edge: self.edge.into_edge()?,
        })
    }

    /// The KEK, and the previous one during a rewrap: from the environment
    /// (`TESSERA_KEK`, `TESSERA_KEK_PREVIOUS`), else a file, else (the KEK
    /// only) the data directory.
    fn keks(&self) -> Result<(KekSource, Option<KekSource>), String> {
        let kek = match (std::env::var("TESSERA_KEK").ok(), &self.kek_file) {
            (Some(v), _) => {
                KekSource::Value(parse_kek(&v).map_err(|e| format!("TESSERA_KEK: {e}"))?)
            }
            (None, Some(p)) => KekSource::File(p.clone()),
            (None, None) => KekSource::DataDir,
        };
        let previous = match (
            std::env::var("TESSERA_KEK_PREVIOUS").ok(),
            &self.previous_kek_file,
        ) {
            (Some(v), _) => Some(KekSource::Value(
                parse_kek(&v).map_err(|e| format!("TESSERA_KEK_PREVIOUS: {e}"))?,
            )),
            (None, Some(p)) => Some(KekSource::File(p.clone())),
            (None, None) => None,
        };
        Ok((kek, previous))
    }

    /// The token policy these options describe.
    fn policy(&self) -> Policy {
        Policy {
            issuer: self.issuer.clone().unwrap_or_else(|| {
                crate::issuer_file::derived(self.edge.tls_cert.is_some(), self.listen)
            }),
            access_ttl_default: self.access_token_ttl,
            access_ttl_max: self.access_token_max_ttl,
            clock_skew: self.clock_skew,
            // `TESSERA_EXTRA_CLAIMS=` (empty) means none, not one empty name.
            extra_claims_allowlist: self
                .extra_claims
                .iter()
                .filter(|n| !n.is_empty())
                .cloned()
                .collect(),
            ..Policy::default()
        }
    }

    /// The key schedule these options describe.
    fn key_schedule(&self) -> Result<KeySchedule, String> {
        Ok(KeySchedule {
            algorithm: Algorithm::from_name(&self.key_algorithm)
                .ok_or("key_algorithm: must be ES256, EdDSA, RS256 or PS256")?,
            rotation_period: self.key_rotation_period,
            publish_ahead: self.key_publish_ahead,
            retire_after: self.key_retire_after,
            jwks_max_age: self.jwks_max_age,
        })
    }
}
