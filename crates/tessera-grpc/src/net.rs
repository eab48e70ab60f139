//! Socket options, in one place, for every gRPC connection Tessera accepts or
//! opens. Latency depends on them: without `TCP_NODELAY` Nagle's algorithm
//! holds the last segment of a multi-frame HTTP/2 response until the peer's
//! delayed ACK (~40 ms on Linux), which once put a 44 ms stall on every RPC.

use std::time::Duration;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};

/// Idle time before the kernel sends TCP keepalive probes, so a peer that
/// vanished without a FIN (power loss, a dropped NAT entry) is noticed.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// How often an idle HTTP/2 connection is pinged. Shorter than common load
/// balancer and NAT idle timeouts (≥ 60 s), long enough to cost nothing.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The accepted-connection stream for `listener`: `TCP_NODELAY` and TCP
/// keepalive on every accepted socket (gRPC and HTTP share the port).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

/// A server builder with HTTP/2 keepalive pings, so dead peers are closed.
pub fn server() -> Server {
    Server::builder()
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
}

/// A client endpoint with the same options as the server side.
pub fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .tcp_nodelay(true)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .http2_keep_alive_interval(HTTP2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(HTTP2_KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}
