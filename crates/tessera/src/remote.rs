//! How the operator commands (`keys`, `revoke`, `token inspect
//! --endpoint`, `healthcheck`) reach a running server: its endpoint, the
//! CA of an `https://` endpoint, and the service key to present when the
//! server has a callers file. The key goes through the same
//! [`Bearer`] interceptor the services use between themselves.

use clap::Args;
use std::path::PathBuf;
use tessera_api::client::{Bearer, PeerChannel};
use tessera_edge::tls::ClientTls;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long an operator command waits for the server's answer.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// Where the server is and how to present oneself to it.
#[derive(Debug, Clone, Args)]
pub struct RemoteArgs {
    /// The server's gRPC endpoint.
    #[arg(
        long,
        env = "TESSERA_ENDPOINT",
        default_value = "http://127.0.0.1:50051",
        value_name = "URL"
    )]
    pub endpoint: String,
    /// With an https:// endpoint: the CA (PEM) that signs its certificate.
    #[arg(long, env = "TESSERA_PEER_CA_FILE", value_name = "PATH")]
    pub peer_ca_file: Option<PathBuf>,
    /// File holding the service key to present (a server with a callers
    /// file admits only known callers); or set TESSERA_SERVICE_KEY to the
    /// key itself.
    #[arg(long, env = "TESSERA_SERVICE_KEY_FILE", value_name = "PATH")]
    pub service_key_file: Option<PathBuf>,
}

impl RemoteArgs {
    /// A channel to the endpoint that presents the service key, if any
    /// (connected on first use).
    pub fn channel(&self) -> Result<PeerChannel, String> {
        let key = match (
            std::env::var("TESSERA_SERVICE_KEY").ok(),
            &self.service_key_file,
        ) {
            // Two keys named: neither silently wins.
            (Some(_), Some(p)) => {
                return Err(format!(
                    "a service key is given twice: TESSERA_SERVICE_KEY and --service-key-file (or TESSERA_SERVICE_KEY_FILE) {}; unset one",
                    p.display()
                ));
            }
            (Some(k), None) => Some(k),
            (None, Some(p)) => Some(
                std::fs::read_to_string(p)
                    .map_err(|e| format!("--service-key-file {}: {e}", p.display()))?,
            ),
            (None, None) => None,
        };
        if key.as_deref().is_some_and(|k| k.trim().is_empty()) {
            return Err(
                "the service key is empty (TESSERA_SERVICE_KEY or --service-key-file)".into(),
            );
        }
        let bearer = Bearer::new(key.as_deref().map(str::trim))?;
        self.check_endpoint()?;
        let tls = match &self.peer_ca_file {
            Some(ca) => Some(ClientTls::load(ca, None).map_err(|e| {
                format!("--peer-ca-file (TESSERA_PEER_CA_FILE): {e}: the file of the CA that signs the server's certificate")
            })?),
            None => None,
        };
        // Bounded, unlike the services' own channels (a WatchKeys stream
        // lives for hours): a port that accepts and never answers (a
        // black-holing firewall, a TLS handshake that stalls) is an error
        // within CALL_TIMEOUT, never a command that hangs.
        let endpoint = tessera_edge::net::endpoint(&self.endpoint, tls.as_ref())
            .map_err(|e| format!("--endpoint {}: {e}", self.endpoint))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        Ok(bearer.intercept(endpoint.connect_lazy()))
    }

    /// The endpoint as the channel will read it: a scheme, no path, and a
    /// CA only for https (a setting that would be ignored is refused).
    fn check_endpoint(&self) -> Result<(), String> {
        let e = &self.endpoint;
        let Some(rest) = e
            .strip_prefix("https://")
            .or_else(|| e.strip_prefix("http://"))
        else {
            return Err(format!(
                "--endpoint {e}: needs a scheme: http://HOST:PORT, or https://HOST:PORT with --peer-ca-file"
            ));
        };
        if rest.trim_end_matches('/').contains('/') {
            return Err(format!(
                "--endpoint {e}: a gRPC endpoint has no path: scheme, host and port only"
            ));
        }
        if e.starts_with("http://") && self.peer_ca_file.is_some() {
            return Err(format!(
                "--endpoint {e}: --peer-ca-file is for an https:// endpoint; use https:// (or drop the CA)"
            ));
        }
        Ok(())
    }

    /// A failed call, for the operator: the code, the server's message,
    /// and the fix for the usual causes.
    pub fn failed(&self, s: &tonic::Status) -> String {
        format!("{:?}: {}{}", s.code(), s.message(), self.hint(s))
    }

    /// The usual cause of a failed call and its fix, from the code and the
    /// transport's words (a TLS or protocol mismatch has no code of its own).
    fn hint(&self, s: &tonic::Status) -> String {
        let tls = self.endpoint.starts_with("https://");
        let message = s.message().to_ascii_lowercase();
        let certificate = message.contains("certificate") || message.contains("unknownissuer");
        if message.contains("dns error") {
            return format!(
                " (the host of {} does not resolve: check --endpoint)",
                self.endpoint
            );
        }
        if message.contains("timeout expired") || s.code() == tonic::Code::DeadlineExceeded {
            return format!(
                " (no answer from {} within {} s: is it a Tessera port, and reachable? a firewall that drops, or a stalled TLS handshake, look like this)",
                self.endpoint,
                CALL_TIMEOUT.as_secs()
            );
        }
        match s.code() {
            tonic::Code::Unavailable if certificate => format!(
                " (TLS: --peer-ca-file does not sign the certificate of {}, or the host name in --endpoint is not in it)",
                self.endpoint
            ),
            tonic::Code::Unavailable if tls && !message.contains("connect") => format!(
                " (TLS failed: does {} serve TLS? a plain server needs http://)",
                self.endpoint
            ),
            tonic::Code::Unavailable if message.contains("connect") => format!(
                " (is a server listening at {}? --endpoint or TESSERA_ENDPOINT names it)",
                self.endpoint
            ),
            // A TLS port answers a plain HTTP/2 preface by closing: the
            // call ends unknown, cancelled or unavailable, never refused.
            tonic::Code::Unknown
            | tonic::Code::Internal
            | tonic::Code::Cancelled
            | tonic::Code::Unavailable
                if !tls =>
            {
                format!(
                    " (the server at {} may serve TLS: use https:// and --peer-ca-file with the CA that signs its certificate)",
                    self.endpoint
                )
            }
            tonic::Code::Unavailable => format!(
                " (is a server listening at {}? --endpoint or TESSERA_ENDPOINT names it)",
                self.endpoint
            ),
            tonic::Code::Unauthenticated => {
                " (present a service key: TESSERA_SERVICE_KEY or --service-key-file; it must be in the server's callers file)".to_owned()
            }
            tonic::Code::PermissionDenied => {
                " (the callers file does not give this service key that right: see its `rpcs`, `revoke` and `keys_admin`)".to_owned()
            }
            _ => String::new(),
        }
    }

    /// Whether the server answers SERVING for the whole server, asked
    /// within 5 s; `Err` says why it could not be asked (no server, TLS,
    /// refused as unauthenticated): that is no answer, not NOT_SERVING.
    pub async fn healthcheck(&self) -> Result<bool, String> {
        let check = async {
            let mut client = HealthClient::new(self.channel()?);
            let request = HealthCheckRequest {
                service: String::new(),
            };
            let r = client.check(request).await.map_err(|s| self.failed(&s))?;
            Ok(r.into_inner().status == ServingStatus::Serving as i32)
        };
        tokio::time::timeout(std::time::Duration::from_secs(5), check)
            .await
            .unwrap_or_else(|_| Err(format!("no answer from {} within 5 s", self.endpoint)))
    }
}

/// `command`, given up with the reason after the remote call's bound (and
/// a margin): the channel's own timeout does not cover a TLS handshake
/// that stalls.
pub async fn bounded<T>(
    command: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let limit = CALL_TIMEOUT + std::time::Duration::from_secs(1);
    tokio::time::timeout(limit, command).await.unwrap_or_else(|_| {
        Err(format!(
            "no answer from the server within {} s: is --endpoint a reachable Tessera port? a firewall that drops, or a stalled TLS handshake, look like this",
            limit.as_secs()
        ))
    })
}
