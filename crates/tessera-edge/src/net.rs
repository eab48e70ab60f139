//! Socket options, in one place, for every gRPC connection Tessera accepts or
//! opens. Latency depends on them: without `TCP_NODELAY` Nagle's algorithm
//! holds the last segment of a multi-frame HTTP/2 response until the peer's
//! delayed ACK (~40 ms on Linux), which once put a 44 ms stall on every RPC.

use crate::tls::{ClientTls, ServerTls};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tessera_api::client::{Bearer, PeerChannel};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Endpoint, Server};

/// Idle time before the kernel sends TCP keepalive probes, so a peer that
/// vanished without a FIN (power loss, a dropped NAT entry) is noticed.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How often an idle HTTP/2 connection is pinged. Shorter than common load
/// balancer and NAT idle timeouts (≥ 60 s), long enough to cost nothing.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bounds on the connections one listener keeps.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Connections open at once (including those still in their handshake);
    /// past it the listener stops accepting until one closes, so the process
    /// never runs out of descriptors.
    pub max_connections: usize,
    /// Connections open at once from one peer address: past it a new one
    /// from that address is closed at once, so no single address (an
    /// anonymous client holding connections open, answering pings) can
    /// take every place under `max_connections`.
    pub max_connections_per_peer: usize,
    /// Time a new connection has to send its first bytes (plain) or finish
    /// its TLS handshake; a peer that connects and says nothing is dropped.
    pub handshake_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            max_connections: 4096,
            max_connections_per_peer: 256,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What the services learn of a connection (in each request's extensions).
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer's address.
    pub remote: Option<SocketAddr>,
    /// The identities of the peer's verified client certificate (mTLS).
    pub tls_names: Option<Arc<[String]>>,
}

/// An accepted connection: plain or TLS, holding its place under the cap.
pub struct Conn {
    io: Io,
    info: ConnInfo,
    _slot: OwnedSemaphorePermit,
    _peer_slot: PeerSlot,
    /// With a client certificate: checked again whenever the TLS files
    /// are reloaded.
    recheck: Option<Recheck>,
}

/// A client certificate to check again on every TLS reload.
struct Recheck {
    tls: Arc<ServerTls>,
    chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    changes: tokio_stream::wrappers::WatchStream<u64>,
}

impl Recheck {
    /// `Err` once the configuration in force no longer trusts the
    /// certificate: the connection is closed (its calls end; the client's
    /// next handshake is refused). Audited as `connection_closed`.
    fn poll(&mut self, cx: &mut Context<'_>, info: &ConnInfo) -> std::io::Result<()> {
        use futures_core::Stream as _;
        while let Poll::Ready(Some(_)) = Pin::new(&mut self.changes).poll_next(cx) {
            if !self.tls.still_trusts(&self.chain) {
                let who = info.tls_names.as_ref().and_then(|n| n.first().cloned());
                let peer = info.remote.map(|a| a.ip().to_string());
                tessera_telemetry::audit::connection_closed(
                    who.as_deref(),
                    peer.as_deref(),
                    "client certificate no longer trusted after a TLS reload",
                );
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "client certificate no longer trusted",
                ));
            }
        }
        Ok(())
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        if let Some(r) = &mut me.recheck
            && let Err(e) = r.poll(cx, &me.info)
        {
            return Poll::Ready(Err(e));
        }
        match &mut me.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The accepted-connection stream for `listener`: `TCP_NODELAY` and TCP
/// keepalive on every socket (gRPC and HTTP share the port), TLS when
/// `tls` is given, and the bounds of `limits`. An accept error (such as
/// running out of descriptors) backs off from 5 ms to 1 s instead of
/// spinning. Each handshake runs in its own task, so a slow one never holds
/// up the next accept.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: ConnLimits,
) -> impl futures_core::Stream<Item = std::io::Result<Conn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, limits, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    limits: ConnLimits,
    tx: tokio::sync::mpsc::Sender<std::io::Result<Conn>>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let peers = PeerCounts::default();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            () = tx.closed() => return,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => listener.accept().await.map(|(s, a)| (s, a, slot)),
                Err(_) => return,
            },
        };
        let (stream, remote, slot) = match accepted {
            Ok(a) => {
                backoff = Duration::ZERO;
                a
            }
            Err(e) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                if backoff == Duration::from_secs(1) || backoff == Duration::from_millis(5) {
                    tracing::warn!(error = %e, retry_in = ?backoff, "accept failed");
                }
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let Some(peer_slot) = peers.take(remote.ip(), limits.max_connections_per_peer) else {
            // Closed at once (dropped): this address holds its share.
            tracing::debug!(%remote, "connection refused: too many from this address");
            continue;
        };
        let (tls, tx) = (tls.clone(), tx.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(
                limits.handshake_timeout,
                handshake(stream, remote, tls.as_ref()),
            );
            match handshake.await {
                Ok(Ok((io, info, recheck))) => {
                    let conn = Conn {
                        io,
                        info,
                        _slot: slot,
                        _peer_slot: peer_slot,
                        recheck,
                    };
                    let _ = tx.send(Ok(conn)).await;
                }
                Ok(Err(e)) => tracing::debug!(%remote, error = %e, "handshake failed"),
                Err(_) => tracing::debug!(%remote, "handshake timed out"),
            }
        });
    }
}

/// Connections open per peer address.
#[derive(Debug, Clone, Default)]
struct PeerCounts(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

impl PeerCounts {
    /// A place for one more connection from `ip`, if it holds fewer than
    /// `max`.
    fn take(&self, ip: std::net::IpAddr, max: usize) -> Option<PeerSlot> {
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = counts.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            counts: self.clone(),
            ip,
        })
    }
}

/// One connection's place in its peer's count, given back when it closes.
struct PeerSlot {
    counts: PeerCounts,
    ip: std::net::IpAddr,
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

async fn handshake(
    stream: TcpStream,
    remote: SocketAddr,
    tls: Option<&Arc<ServerTls>>,
) -> std::io::Result<(Io, ConnInfo, Option<Recheck>)> {
    stream.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE);
    socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive)?;
    let mut info = ConnInfo {
        remote: Some(remote),
        tls_names: None,
    };
    let Some(tls) = tls else {
        // A plain peer must speak first (the HTTP/2 preface or an HTTP/1.1
        // request line) within the handshake timeout.
        // (`readable()` may report ready before any byte arrived; a peek
        // returns only once one has, or at EOF.)
        stream.peek(&mut [0u8; 1]).await?;
        return Ok((Io::Plain(stream), info, None));
    };
    let stream = tls.acceptor().accept(stream).await?;
    let chain = stream.get_ref().1.peer_certificates().map(<[_]>::to_vec);
    let recheck = chain.and_then(|chain| {
        info.tls_names = Some(crate::tls::cert_names(chain.first()?).into());
        Some(Recheck {
            changes: tokio_stream::wrappers::WatchStream::from_changes(tls.changes()),
            tls: tls.clone(),
            chain,
        })
    });
    Ok((Io::Tls(Box::new(stream)), info, recheck))
}

/// A server builder with HTTP/2 keepalive pings (dead peers are closed) and
/// the HTTP/2 limits: streams per connection and header list size. (The
/// deadline of each call is the [`crate::deadline::Deadline`] layer's.)
pub fn server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .http2_max_header_list_size(Some(MAX_HEADER_LIST_BYTES))
}

/// Concurrent streams one HTTP/2 connection may open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Largest header list a request may send (a token travels in the body).
pub const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// A client endpoint with the same options as the server side, and TLS
/// (verifying the server against `tls`'s CA) for an `https://` URL.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    match (url.starts_with("https://"), tls) {
        (true, Some(tls)) => endpoint.tls_config(tls.config()).map_err(|e| e.to_string()),
        (true, None) => Err("an https:// endpoint needs --peer-ca-file (the CA that signs the service's certificate)".into()),
        (false, _) => Ok(endpoint),
    }
}

/// A lazily connected channel to another Tessera service at `url`,
/// presenting `bearer`'s service key (and trace context) on every call.
pub fn channel(bearer: &Bearer, url: &str, tls: Option<&ClientTls>) -> Result<PeerChannel, String> {
    Ok(bearer.intercept(endpoint(url, tls)?.connect_lazy()))
}
