//! Every call's deadline, and writes that run to their end.
//!
//! A call that may write (every RPC but the reads below) runs in a task of
//! its own, so nothing the client does (cancelling, disconnecting) and no
//! deadline cuts a store transaction or a fan-out half-way: the work
//! commits or rolls back whole, as one unit (see `tessera_storage`'s `tx`
//! module for the connection side). The client is answered at its
//! deadline — the server's `--request-timeout-ms` or a shorter
//! `grpc-timeout` — with `DEADLINE_EXCEEDED` and
//! `ERROR_REASON_OUTCOME_UNKNOWN`: the call may still take effect. Every
//! write RPC is safe to retry (`Revoke` is idempotent, a `Refresh` retried
//! within the grace window gets the same successor, an `Issue` retried is a
//! second login), so the answer to an unknown outcome is to retry.
//!
//! Reads (`Verify`, the key set, the watch streams, health, the HTTP
//! documents) change nothing, so they run inline, with no task to spawn on
//! the hot path, and are dropped at the deadline: `DEADLINE_EXCEEDED` with
//! `ERROR_REASON_TIMED_OUT`.
//!
//! The task is bounded too: a store statement, a lock wait and a pool
//! checkout each have a time bound, so a detached call ends soon after its
//! deadline. It holds its concurrency place (the shedding layer runs
//! inside it) until it ends, so cancelled calls cannot pile up past the
//! bounds.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tessera_api::status;
use tessera_proto::v1::ErrorReason;
use tonic::Code;
use tonic::body::Body;
use tracing::Instrument as _;

/// Layer: the deadline of each call, its handler detached (see the module).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    limit: Duration,
}

impl Deadline {
    /// Calls end at `limit`, or at the client's shorter `grpc-timeout`.
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> tower::Layer<S> for Deadline {
    type Service = Detached<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Detached {
            inner,
            limit: self.limit,
        }
    }
}

/// Service of [`Deadline`].
#[derive(Debug, Clone)]
pub struct Detached<S> {
    inner: S,
    limit: Duration,
}

type Answer<E> = Pin<Box<dyn Future<Output = Result<http::Response<Body>, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Detached<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Answer<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let limit =
            grpc_timeout(req.headers()).map_or(self.limit, |t| answer_by(t).min(self.limit));
        if !may_write(req.uri().path()) {
            let call = self.inner.call(req);
            return Box::pin(async move {
                tokio::time::timeout(limit, call)
                    .await
                    .unwrap_or_else(|_| Ok(timed_out(limit).into_http()))
            });
        }
        // The handler knows its deadline: a write still waiting to begin
        // when it passes is abandoned (`tessera_domain::deadline`).
        let at = std::time::Instant::now() + limit;
        let call = tessera_domain::deadline::within(at, self.inner.call(req));
        let task = tokio::spawn(call.in_current_span());
        Box::pin(async move {
            match tokio::time::timeout(limit, task).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_panicked)) => Ok(status(
                    Code::Internal,
                    ErrorReason::Internal,
                    "the call failed on the server (an internal error; it is logged)",
                )
                .into_http()),
                Err(_) => Ok(deadline_exceeded(limit).into_http()),
            }
        })
    }
}

/// RPCs that never write to a store (see the module).
const READS: &[&str] = &[
    "Verify",
    "GetJwks",
    "WatchKeys",
    "WatchRevocations",
    "ListKeys",
];

/// Whether the call at `path` may write: a Tessera RPC not among the reads.
fn may_write(path: &str) -> bool {
    matches!(crate::gate::classify(path), crate::gate::Class::Rpc(m) if !READS.contains(&m))
}

/// The answer to a read at its deadline: it changed nothing.
fn timed_out(limit: Duration) -> tonic::Status {
    status(
        Code::DeadlineExceeded,
        ErrorReason::TimedOut,
        format!(
            "the call did not finish within its deadline ({} ms); it changes nothing, so it is safe to retry",
            limit.as_millis()
        ),
    )
}

/// When to answer a client whose deadline is `t`: a little before it (a
/// tenth, at most 50 ms), so the answer, which says the outcome is
/// unknown, arrives before the client's own timer gives up with a bare
/// CANCELLED.
fn answer_by(t: Duration) -> Duration {
    t.saturating_sub((t / 10).min(Duration::from_millis(50)))
}

/// The answer at a call's deadline: its outcome is unknown.
pub fn deadline_exceeded(limit: Duration) -> tonic::Status {
    status(
        Code::DeadlineExceeded,
        ErrorReason::OutcomeUnknown,
        format!(
            "the call did not finish within its deadline ({} ms): it may still take effect on the server, so its outcome is unknown; retry it (every Tessera write is safe to retry)",
            limit.as_millis()
        ),
    )
}

/// The client's `grpc-timeout` (gRPC over HTTP/2: at most 8 digits and a
/// unit), or `None` when absent or malformed.
fn grpc_timeout(headers: &http::HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.to_str().ok()?;
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::{grpc_timeout, may_write};

    #[test]
    fn only_writes_are_detached() {
        for w in [
            "Issue",
            "Refresh",
            "IssuePurposeToken",
            "RedeemPurposeToken",
        ] {
            assert!(may_write(&format!("/tessera.v1.IssuerService/{w}")), "{w}");
        }
        assert!(may_write("/tessera.v1.RevocationService/Revoke"));
        for k in ["RotateKeys", "RetireKey", "CompromiseKey"] {
            assert!(may_write(&format!("/tessera.v1.KeyService/{k}")), "{k}");
        }
        for r in [
            "/tessera.v1.IntrospectionService/Verify",
            "/tessera.v1.KeyService/GetJwks",
            "/tessera.v1.RevocationService/WatchRevocations",
            "/grpc.health.v1.Health/Check",
            "/.well-known/jwks.json",
            "/tessera.v1.IssuerService/MadeUp",
        ] {
            assert!(!may_write(r), "{r}");
        }
    }
    use std::time::Duration;

    fn parse(v: &str) -> Option<Duration> {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-timeout", v.parse().unwrap());
        grpc_timeout(&h)
    }

    #[test]
    fn grpc_timeouts_are_read_in_every_unit() {
        assert_eq!(parse("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "1x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
