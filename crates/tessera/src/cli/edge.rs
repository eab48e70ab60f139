//! `tessera serve`'s edge options: who may call, TLS both ways, and the
//! limits of the port, into the configuration's [`Edge`].

use crate::config::Edge;
use clap::Args;
use std::path::PathBuf;
use tessera_domain::Secret;

/// Who may call, TLS both ways, and the limits of the port.
#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The callers file (TOML: ids, service-key hashes, client-certificate
    /// names, rights). Reloaded on SIGHUP and when it changes. Without it
    /// every caller is admitted, which is allowed on loopback only.
    #[arg(long, env = "TESSERA_CALLERS_FILE")]
    pub callers_file: Option<PathBuf>,
    /// Server certificate chain (PEM). With --tls-key, the port serves TLS;
    /// both files are reloaded when they change.
    #[arg(long, env = "TESSERA_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "TESSERA_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA (PEM) that signs client certificates: turns on mTLS.
    #[arg(long, env = "TESSERA_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// With --tls-client-ca: `optional` (a caller may use a service key
    /// instead) or `required` (every connection presents a certificate).
    #[arg(
        long,
        env = "TESSERA_TLS_CLIENT_AUTH",
        value_enum,
        default_value = "optional"
    )]
    pub tls_client_auth: ClientAuthArg,
    /// CA (PEM) that signs the other Tessera services' certificates, for
    /// this instance's calls to https:// endpoints (with --tls-cert/--tls-key
    /// it also presents that certificate: mTLS).
    #[arg(long, env = "TESSERA_PEER_CA_FILE")]
    pub peer_ca_file: Option<PathBuf>,
    /// File holding the service key this instance presents on its own calls
    /// to the other services (or TESSERA_SERVICE_KEY).
    #[arg(long, env = "TESSERA_SERVICE_KEY_FILE")]
    pub service_key_file: Option<PathBuf>,
    /// Connections open at once; past it new ones wait in the kernel's
    /// backlog.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS", default_value_t = 4096)]
    pub max_connections: usize,
    /// Connections open at once from one peer address; past it a new one
    /// from that address is closed at once.
    #[arg(long, env = "TESSERA_MAX_CONNECTIONS_PER_PEER", default_value_t = 256)]
    pub max_connections_per_peer: usize,
    /// Calls of known callers (of everyone, without a callers file) in
    /// flight at once; past it calls are refused at once with
    /// RESOURCE_EXHAUSTED (health is never refused). A call counts once its
    /// request message has arrived.
    #[arg(long, env = "TESSERA_MAX_IN_FLIGHT", default_value_t = 1024)]
    pub max_in_flight: usize,
    /// Calls admitted without a caller to open endpoints (the JWKS, an open
    /// Verify) in flight at once, all peers together: a budget of their own,
    /// so anonymous calls never take a known caller's place.
    #[arg(long, env = "TESSERA_MAX_OPEN_IN_FLIGHT", default_value_t = 256)]
    pub max_open_in_flight: usize,
    /// Of those, from one peer address.
    #[arg(
        long,
        env = "TESSERA_MAX_OPEN_IN_FLIGHT_PER_PEER",
        default_value_t = 32
    )]
    pub max_open_in_flight_per_peer: usize,
    /// Time a request's message has to arrive after its headers,
    /// milliseconds; past it the call ends with DEADLINE_EXCEEDED
    /// (ERROR_REASON_REQUEST_INCOMPLETE) and nothing was done.
    #[arg(long, env = "TESSERA_BODY_TIMEOUT_MS", default_value_t = 2_000)]
    pub body_timeout_ms: u64,
    /// The longest a stream (WatchKeys, WatchRevocations) lives, seconds;
    /// then the server ends it with OK and clients reconnect
    /// (WatchRevocations with after_id). A stream whose caller a reload
    /// removes, or whose right it withdraws, ends at once.
    #[arg(
        long,
        env = "TESSERA_MAX_STREAM_LIFETIME_SECS",
        default_value_t = 3_600
    )]
    pub max_stream_lifetime_secs: u64,
    /// The longest a call may run on the server, milliseconds (a client's
    /// shorter deadline wins).
    #[arg(long, env = "TESSERA_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Time a new connection has to speak (or finish TLS), milliseconds.
    #[arg(long, env = "TESSERA_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,
}

/// `--tls-client-auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientAuthArg {
    /// A client certificate is verified if presented.
    Optional,
    /// Every connection presents a client certificate.
    Required,
}

impl EdgeArgs {
    pub(super) fn into_edge(self) -> Result<Edge, String> {
        use tessera_edge::tls::{ClientAuth, TlsFiles};
        let tls = match (self.tls_cert, self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert,
                key,
                client_auth: match (&self.tls_client_ca, self.tls_client_auth) {
                    (None, _) => ClientAuth::None,
                    (Some(_), ClientAuthArg::Optional) => ClientAuth::Optional,
                    (Some(_), ClientAuthArg::Required) => ClientAuth::Required,
                },
                client_ca: self.tls_client_ca,
            }),
            _ => None,
        };
        let service_key = match (
            std::env::var("TESSERA_SERVICE_KEY").ok(),
            self.service_key_file,
        ) {
            (Some(k), _) => Some(k),
            (None, Some(p)) => Some(
                std::fs::read_to_string(&p)
                    .map_err(|e| format!("service_key_file {}: {e}", p.display()))?,
            ),
            (None, None) => None,
        };
        Ok(Edge {
            callers_file: self.callers_file,
            tls,
            peer_ca: self.peer_ca_file,
            service_key: service_key.map(|k| Secret::new(k.trim().as_bytes().to_vec())),
            conn: tessera_edge::net::ConnLimits {
                max_connections: self.max_connections.max(1),
                max_connections_per_peer: self.max_connections_per_peer.max(1),
                handshake_timeout: std::time::Duration::from_millis(self.handshake_timeout_ms),
            },
            max_in_flight: self.max_in_flight.max(1),
            max_open_in_flight: self.max_open_in_flight.max(1),
            max_open_per_peer: self.max_open_in_flight_per_peer.max(1),
            body_timeout: std::time::Duration::from_millis(self.body_timeout_ms.max(1)),
            stream_lifetime: std::time::Duration::from_secs(self.max_stream_lifetime_secs.max(1)),
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms.max(1)),
            // The binary turns it on with OTLP export (telemetry.rs).
            trace_context: false,
        })
    }
}
