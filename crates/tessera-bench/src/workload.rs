//! What each mode sends. Tokens and refresh-token chains are prepared before
//! a phase starts, so a phase measures only the calls it names.

use crate::client::{Key, KeyedChannel as PeerChannel};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tessera_proto::v1::introspection_service_client::IntrospectionServiceClient;
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    Consistency, IssueRequest, JtiTarget, RefreshRequest, RevokeRequest, TokenKind, VerifyRequest,
};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The audience every bench token is issued for.
pub const AUDIENCE: &str = "bench-api";

/// The service key every bench call presents, when the server under test
/// has a callers file (`run --callers`).
static SERVICE_KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Present `key` on every call from now on.
pub fn present_service_key(key: String) {
    let _ = SERVICE_KEY.set(key);
}

/// The service key presented, if any.
pub fn service_key() -> Option<&'static str> {
    SERVICE_KEY.get().map(String::as_str)
}

/// The clients of one connection.
#[derive(Clone)]
pub struct Clients {
    health: HealthClient<PeerChannel>,
    issuer: IssuerServiceClient<PeerChannel>,
    introspection: IntrospectionServiceClient<PeerChannel>,
    revocation: RevocationServiceClient<PeerChannel>,
    /// The same connection without the service key: forward-auth presents
    /// it in its own header, `authorization` being the client's token.
    raw: tonic::transport::Channel,
}

impl Clients {
    /// Opens one HTTP/2 connection to `url` (the same socket options as
    /// Tessera's own clients: TCP_NODELAY, keepalive), presenting the
    /// service key if one is set, as Tessera's own clients do.
    pub async fn connect(url: &str) -> Result<Self, String> {
        Self::connect_as(url, SERVICE_KEY.get().map(String::as_str)).await
    }

    /// [`Clients::connect`], presenting `key` (or none).
    pub async fn connect_as(url: &str, key: Option<&str>) -> Result<Self, String> {
        let bearer = Key::new(key)?;
        let ch = crate::client::endpoint(url)?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        let raw = ch.clone();
        let ch = tonic::service::interceptor::InterceptedService::new(ch, bearer);
        Ok(Self {
            health: HealthClient::new(ch.clone()),
            issuer: IssuerServiceClient::new(ch.clone()),
            introspection: IntrospectionServiceClient::new(ch.clone()),
            revocation: RevocationServiceClient::new(ch),
            raw,
        })
    }

    /// `Issue` for a fresh subject: the access token and refresh token.
    pub async fn issue(&mut self, n: u64) -> Result<(String, String), String> {
        let r = self
            .issuer
            .issue(IssueRequest {
                subject: format!("bench-user-{n}"),
                audience: AUDIENCE.into(),
                scopes: vec!["read".into(), "write".into()],
                client_id: "bench".into(),
                ..IssueRequest::default()
            })
            .await
            .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
            .into_inner();
        Ok((r.access_token, r.refresh_token))
    }
}

/// `Verify` of a bench access token with `consistency`.
fn verify_request(token: &str, consistency: Consistency) -> VerifyRequest {
    VerifyRequest {
        token: token.to_owned(),
        expected_audience: AUDIENCE.into(),
        expected_kind: TokenKind::Access.into(),
        consistency: consistency.into(),
    }
}

impl Clients {
    /// True when `Verify` answers REVOKED for `token`.
    pub async fn is_revoked(&mut self, token: &str) -> Result<bool, String> {
        let r = self
            .introspection
            .verify(verify_request(token, Consistency::Default))
            .await
            .map_err(|s| status(&s))?
            .into_inner();
        Ok(r.failure() == tessera_proto::v1::VerifyFailure::Revoked)
    }

    /// The status code of one `Verify` of `token` (a refusal is a code, not
    /// an error).
    pub async fn verify_code(&mut self, token: &str) -> tonic::Code {
        let r = self
            .introspection
            .verify(verify_request(token, Consistency::Default))
            .await;
        r.map_or_else(|s| s.code(), |_| tonic::Code::Ok)
    }

    /// `Revoke` of a token.
    pub async fn revoke_token(&mut self, token: &str) -> Result<(), String> {
        self.revocation
            .revoke(RevokeRequest {
                target: Some(Target::Token(token.to_owned())),
                reason: "bench".into(),
            })
            .await
            .map(drop)
            .map_err(|s| status(&s))
    }

    /// gRPC health `Check`.
    async fn check_health(&mut self) -> Result<(), String> {
        self.health
            .check(HealthCheckRequest::default())
            .await
            .map(drop)
            .map_err(|s| status(&s))
    }

    /// `Verify` of `token`, DEFAULT or STRONG; an answer other than valid is
    /// an error.
    async fn verify(&mut self, token: &str, strong: bool) -> Result<(), String> {
        let consistency = match strong {
            true => Consistency::Strong,
            false => Consistency::Default,
        };
        match self
            .introspection
            .verify(verify_request(token, consistency))
            .await
        {
            Ok(r) if r.get_ref().valid => Ok(()),
            Ok(r) => Err(format!("not valid: {:?}", r.get_ref().failure())),
            Err(s) => Err(status(&s)),
        }
    }

    /// A forward-auth question about `token` (`GET /gateway/auth` as a
    /// gateway asks it); an answer other than 200 is an error.
    async fn forward_auth(&mut self, token: &str) -> Result<(), String> {
        use tonic::codegen::{Service, http};
        let mut req = http::Request::get("/gateway/auth")
            .header("x-forwarded-host", crate::gateway::HOST)
            .header("x-forwarded-uri", crate::gateway::PATH)
            .header("authorization", format!("Bearer {token}"));
        if let Some(key) = SERVICE_KEY.get() {
            req = req.header("x-tessera-gateway-key", key);
        }
        let req = req
            .body(tonic::body::Body::empty())
            .map_err(|e| e.to_string())?;
        std::future::poll_fn(|cx| self.raw.poll_ready(cx))
            .await
            .map_err(|e| e.to_string())?;
        let answer = self.raw.call(req).await.map_err(|e| e.to_string())?;
        match answer.status() {
            http::StatusCode::OK => Ok(()),
            s => Err(format!("HTTP {s}")),
        }
    }

    /// `Refresh` of `refresh_token`: its successor.
    async fn refresh(&mut self, refresh_token: String) -> Result<String, String> {
        self.issuer
            .refresh(RefreshRequest {
                refresh_token,
                ..RefreshRequest::default()
            })
            .await
            .map(|r| r.into_inner().refresh_token)
            .map_err(|s| status(&s))
    }

    /// `Revoke` of the token id `jti`, denied until `until`.
    async fn revoke_jti(&mut self, jti: String, until: i64) -> Result<(), String> {
        self.revocation
            .revoke(RevokeRequest {
                target: Some(Target::Jti(JtiTarget {
                    jti,
                    expires_at: Some(prost_types::Timestamp {
                        seconds: until,
                        nanos: 0,
                    }),
                })),
                reason: "bench".into(),
            })
            .await
            .map(drop)
            .map_err(|s| status(&s))
    }
}

/// A worker's own state: the refresh token its chain continues from.
#[derive(Default)]
pub struct Slot {
    refresh_token: Option<String>,
    /// The worker's own HTTP/1.1 connection (one call at a time on each).
    http: Option<tokio::net::TcpStream>,
}

/// One mode's calls.
pub enum Workload {
    /// gRPC health `Check`: the floor.
    Health,
    /// `Verify` of tokens from a list: each once (`cycle: false`, first
    /// sight) or round and round (`cycle: true`, a working set).
    Verify {
        tokens: Vec<String>,
        next: AtomicUsize,
        cycle: bool,
        strong: bool,
    },
    /// `Issue` for a new subject each call (a login: access token and a new
    /// refresh-token family).
    Issue { next: AtomicU64 },
    /// `Refresh` along chains: each worker takes a family and keeps
    /// presenting the newest refresh token.
    Refresh { families: Mutex<Vec<String>> },
    /// `Revoke` of a new `jti` each call.
    Revoke { next: AtomicU64, until: i64 },
    /// Forward-auth questions about a working set of tokens seen before:
    /// to Tessera itself (`via: None`), or requests through a gateway at
    /// `via` over keep-alive HTTP/1.1.
    Gateway {
        tokens: Vec<String>,
        next: AtomicUsize,
        via: Option<std::net::SocketAddr>,
    },
}

fn status(s: &tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

impl Workload {
    /// A `Verify` workload.
    pub fn verify(tokens: Vec<String>, cycle: bool, strong: bool) -> Self {
        Self::Verify {
            tokens,
            next: AtomicUsize::new(0),
            cycle,
            strong,
        }
    }

    /// How many calls the workload can make, when it is finite.
    pub fn supply(&self) -> Option<usize> {
        match self {
            Self::Verify {
                tokens,
                cycle: false,
                ..
            } => Some(tokens.len()),
            _ => None,
        }
    }

    /// One call; `None` when the supply is spent.
    pub async fn call(&self, slot: &mut Slot, c: &Clients) -> Option<Result<(), String>> {
        let mut c = c.clone();
        Some(match self {
            Self::Health => c.check_health().await,
            Self::Verify {
                tokens,
                next,
                cycle,
                strong,
            } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let token = match cycle {
                    true => tokens.get(i % tokens.len().max(1))?,
                    false => tokens.get(i)?,
                };
                c.verify(token, *strong).await
            }
            Self::Issue { next } => c
                .issue(next.fetch_add(1, Ordering::Relaxed))
                .await
                .map(drop),
            Self::Refresh { families } => {
                if slot.refresh_token.is_none() {
                    slot.refresh_token = families.lock().unwrap_or_else(|p| p.into_inner()).pop();
                }
                let refresh_token = slot.refresh_token.take()?;
                // A failed refresh ends the chain: the slot stays empty and
                // the worker takes the next family.
                c.refresh(refresh_token)
                    .await
                    .map(|next| slot.refresh_token = Some(next))
            }
            Self::Revoke { next, until } => {
                let n = next.fetch_add(1, Ordering::Relaxed);
                c.revoke_jti(format!("bench-revoked-{n}"), *until).await
            }
            Self::Gateway { tokens, next, via } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let token = tokens.get(i % tokens.len().max(1))?;
                match via {
                    None => c.forward_auth(token).await,
                    Some(addr) => through(slot, *addr, token).await,
                }
            }
        })
    }
}

/// A request for `token` through the gateway at `addr`, on the worker's
/// keep-alive connection (opened on first use, and again after a failure).
async fn through(slot: &mut Slot, addr: std::net::SocketAddr, token: &str) -> Result<(), String> {
    if slot.http.is_none() {
        let s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = s.set_nodelay(true);
        slot.http = Some(s);
    }
    let stream = slot.http.as_mut().ok_or("no connection")?;
    let r = crate::gateway::get(stream, &crate::gateway::request(token)).await;
    if r != Ok(true) {
        slot.http = None;
    }
    r.map(drop)
}
