//! [`Shed`]: the bounds on calls in flight (see the stack in the `tessera`
//! crate's `app.rs`, and [`crate::gate`] for how paths are classified).
//!
//! - A call takes its place under a bound only once its request message
//!   has arrived (the end of its request body), so a client that opens
//!   calls and never sends their bodies holds no shared place; and a body
//!   that has not arrived within the body timeout ends the call with
//!   `DEADLINE_EXCEEDED` / `ERROR_REASON_REQUEST_INCOMPLETE` (nothing was
//!   done). A request without a body (an HTTP GET) takes its place at once.
//! - Known callers share one bound (`--max-in-flight`); calls admitted
//!   without a caller to an open endpoint (the JWKS, an open Verify, a path
//!   no service serves) have a bound of their own
//!   (`--max-open-in-flight`) and a bound per peer address
//!   (`--max-open-in-flight-per-peer`), so no number of anonymous calls can
//!   refuse a known caller, nor one anonymous peer all the others.
//! - Past a bound a call is refused at once with `RESOURCE_EXHAUSTED` /
//!   `ERROR_REASON_OVERLOADED` rather than queued; health is never shed.

use super::{Class, OpenCall, classify, overloaded};
use crate::guard::{Guard, Guarded};
use crate::net::ConnInfo;
use crate::refusal::{Refusal, refuse};
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tessera_api::status;
use tessera_proto::v1::ErrorReason;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tonic::body::Body;
use tonic::{Code, Status};

/// The bounds of [`Shed`].
#[derive(Debug, Clone, Copy)]
pub struct ShedLimits {
    /// Calls of known callers (or of everyone, without a callers file).
    pub max_in_flight: usize,
    /// Anonymous calls to open endpoints, all peers together.
    pub max_open_in_flight: usize,
    /// Anonymous calls to open endpoints from one peer address.
    pub max_open_per_peer: usize,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
}

impl Default for ShedLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_open_in_flight: 256,
            max_open_per_peer: 32,
            body_timeout: Duration::from_secs(2),
        }
    }
}

/// Layer: bound the calls in flight (see the module).
#[derive(Clone)]
pub struct Shed(Arc<Budgets>);

struct Budgets {
    known: Arc<Semaphore>,
    open: Arc<Semaphore>,
    peers: Mutex<HashMap<IpAddr, usize>>,
    limits: ShedLimits,
}

impl std::fmt::Debug for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shed")
            .field("known_available", &self.0.known.available_permits())
            .field("open_available", &self.0.open.available_permits())
            .finish()
    }
}

impl Shed {
    /// Within `limits`. A refusal carries [`Refusal::Shed`], which the
    /// observing layer counts.
    pub fn new(limits: ShedLimits) -> Self {
        Self(Arc::new(Budgets {
            known: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            open: Arc::new(Semaphore::new(limits.max_open_in_flight.max(1))),
            peers: Mutex::new(HashMap::new()),
            limits,
        }))
    }
}

impl<S> tower::Layer<S> for Shed {
    type Service = Shedding<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Shedding {
            inner,
            shed: self.clone(),
        }
    }
}

/// Service of [`Shed`].
#[derive(Debug, Clone)]
pub struct Shedding<S> {
    inner: S,
    shed: Shed,
}

impl<S> tower::Service<http::Request<Body>> for Shedding<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Guarded<S::Future, Slot>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if classify(req.uri().path()) == Class::Health {
            return Guarded::admitted(self.inner.call(req), Slot(None));
        }
        let open = req.extensions().get::<OpenCall>().is_some();
        let peer = open
            .then(|| req.extensions().get::<ConnInfo>()?.remote.map(|a| a.ip()))
            .flatten();
        let place = Arc::new(Place {
            budgets: self.shed.0.clone(),
            pool: if open { Pool::Open(peer) } else { Pool::Known },
            state: Mutex::new(State::Waiting),
        });
        if http_body::Body::is_end_stream(req.body()) {
            // The whole request is here already (a GET).
            if let Err(status) = place.take() {
                return Guarded::refused(refuse(&req, status, Some(Refusal::Shed)));
            }
            return Guarded::admitted(self.inner.call(req), Slot(Some(place)));
        }
        let deadline = Instant::now() + self.shed.0.limits.body_timeout;
        let arriving = place.clone();
        let req = req.map(|body| Body::new(Arriving::new(body, arriving, deadline)));
        Guarded::admitted(self.inner.call(req), Slot(Some(place)))
    }
}

/// Which bound a call counts against.
enum Pool {
    Known,
    /// Anonymous, from this peer (when known).
    Open(Option<IpAddr>),
}

/// A call's place under its bound: waiting for its message, held, or
/// refused.
struct Place {
    budgets: Arc<Budgets>,
    pool: Pool,
    state: Mutex<State>,
}

enum State {
    Waiting,
    /// Held until the call is answered (given back when dropped).
    Held {
        _permit: OwnedSemaphorePermit,
        _peer: Option<PeerPlace>,
    },
    Shed,
    Done,
}

impl Place {
    /// Takes the place now that the message is here, or says why not.
    fn take(&self) -> Result<(), Status> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(*state, State::Waiting) {
            return Ok(());
        }
        let b = &self.budgets;
        let held = match self.pool {
            Pool::Known => b.known.clone().try_acquire_owned().ok().map(|p| (p, None)),
            Pool::Open(peer) => {
                let peer_place = match peer {
                    Some(ip) => PeerPlace::take(b, ip).map(Some),
                    None => Some(None),
                };
                peer_place.and_then(|pp| b.open.clone().try_acquire_owned().ok().map(|p| (p, pp)))
            }
        };
        match held {
            Some((permit, peer)) => {
                *state = State::Held {
                    _permit: permit,
                    _peer: peer,
                };
                Ok(())
            }
            None => {
                *state = State::Shed;
                Err(overloaded(
                    "the server is at its limit of calls in flight; retry with backoff",
                ))
            }
        }
    }

    /// The call is answered: gives the place back; true if it was shed.
    fn release(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        matches!(std::mem::replace(&mut *state, State::Done), State::Shed)
    }
}

/// One anonymous call counted against its peer's bound until dropped.
struct PeerPlace {
    budgets: Arc<Budgets>,
    ip: IpAddr,
}

impl PeerPlace {
    fn take(budgets: &Arc<Budgets>, ip: IpAddr) -> Option<Self> {
        let mut peers = budgets.peers.lock().unwrap_or_else(|p| p.into_inner());
        let n = peers.entry(ip).or_insert(0);
        if *n >= budgets.limits.max_open_per_peer.max(1) {
            return None;
        }
        *n += 1;
        Some(Self {
            budgets: budgets.clone(),
            ip,
        })
    }
}

impl Drop for PeerPlace {
    fn drop(&mut self) {
        let mut peers = self.budgets.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.ip);
            }
        }
    }
}

/// A call's place, given back with its response headers (a stream's
/// place with its first headers: a stream's life is bounded elsewhere).
pub struct Slot(Option<Arc<Place>>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

impl Guard for Slot {
    fn answered(&mut self, mut response: http::Response<Body>) -> http::Response<Body> {
        if let Some(place) = self.0.take()
            && place.release()
        {
            response.extensions_mut().insert(Refusal::Shed);
        }
        response
    }
}

/// A request body that takes its call's place when it has all arrived, and
/// ends the call if it has not by its deadline.
struct Arriving {
    body: Body,
    place: Arc<Place>,
    deadline: Instant,
    /// Made only if the body is not all there at its first poll.
    timer: Option<Pin<Box<Sleep>>>,
    arrived: bool,
}

impl Arriving {
    fn new(body: Body, place: Arc<Place>, deadline: Instant) -> Self {
        Self {
            body,
            place,
            deadline,
            timer: None,
            arrived: false,
        }
    }

    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = self.deadline;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        timer.as_mut().poll(cx).is_ready()
    }
}

fn incomplete() -> Status {
    status(
        Code::DeadlineExceeded,
        ErrorReason::RequestIncomplete,
        "the request message did not arrive in time (--body-timeout-ms); nothing was done",
    )
}

impl http_body::Body for Arriving {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let me = self.get_mut();
        if me.arrived {
            return Pin::new(&mut me.body).poll_frame(cx);
        }
        let polled = match Pin::new(&mut me.body).poll_frame(cx) {
            Poll::Pending if me.timed_out(cx) => return Poll::Ready(Some(Err(incomplete()))),
            other => ready!(other),
        };
        let end = match &polled {
            None => true,
            Some(Ok(_)) => me.body.is_end_stream(),
            Some(Err(_)) => false,
        };
        if end {
            me.arrived = true;
            if let Err(status) = me.place.take() {
                return Poll::Ready(Some(Err(status)));
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.arrived && self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use tower::Service as _;

    /// A service whose calls never finish (they hold their places).
    #[derive(Clone)]
    struct Forever;

    impl tower::Service<http::Request<Body>> for Forever {
        type Response = http::Response<Body>;
        type Error = std::convert::Infallible;
        type Future = std::future::Pending<Result<Self::Response, Self::Error>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn call(&mut self, _: http::Request<Body>) -> Self::Future {
            std::future::pending()
        }
    }

    fn get(open: Option<[u8; 4]>) -> http::Request<Body> {
        let mut r = http::Request::get("/.well-known/jwks.json")
            .body(Body::empty())
            .unwrap();
        if let Some(ip) = open {
            r.extensions_mut().insert(OpenCall);
            r.extensions_mut().insert(ConnInfo {
                remote: Some((ip, 1000).into()),
                tls_names: None,
            });
        }
        r
    }

    /// Polls `f` once: `Some(shed)` if it answered at once.
    fn answered_at_once<
        F: Future<Output = Result<http::Response<Body>, std::convert::Infallible>>,
    >(
        f: F,
    ) -> Option<bool> {
        let mut f = std::pin::pin!(f);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(Ok(r)) => Some(r.extensions().get::<Refusal>().is_some()),
            Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn anonymous_calls_have_their_own_bounds() {
        let limits = ShedLimits {
            max_in_flight: 2,
            max_open_in_flight: 3,
            max_open_per_peer: 2,
            body_timeout: Duration::from_secs(1),
        };
        let mut svc = tower::Layer::layer(&Shed::new(limits), Forever);
        let mut held = Vec::new();
        // Peer 1 takes its two places; a third is shed.
        for _ in 0..2 {
            held.push(svc.call(get(Some([10, 0, 0, 1]))));
        }
        assert_eq!(
            answered_at_once(svc.call(get(Some([10, 0, 0, 1])))),
            Some(true)
        );
        // Peer 2 takes the last open place; then the open bound is full.
        held.push(svc.call(get(Some([10, 0, 0, 2]))));
        assert_eq!(
            answered_at_once(svc.call(get(Some([10, 0, 0, 3])))),
            Some(true)
        );
        // Known callers are untouched by all of it.
        let (a, b) = (svc.call(get(None)), svc.call(get(None)));
        assert_eq!(answered_at_once(a), None, "a known caller is admitted");
        assert_eq!(answered_at_once(b), None, "a known caller is admitted");
        drop(held);
    }

    /// A body that never sends anything.
    struct Silent;

    impl http_body::Body for Silent {
        type Data = bytes::Bytes;
        type Error = Status;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            Poll::Pending
        }
    }

    fn place(known: usize) -> Arc<Place> {
        let limits = ShedLimits {
            max_in_flight: known,
            ..ShedLimits::default()
        };
        Arc::new(Place {
            budgets: Shed::new(limits).0,
            pool: Pool::Known,
            state: Mutex::new(State::Waiting),
        })
    }

    #[tokio::test]
    async fn a_place_is_taken_when_the_message_has_arrived() {
        use http_body_util::BodyExt as _;
        let p = place(1);
        let full = Body::new(http_body_util::Full::new(bytes::Bytes::from_static(b"msg")));
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut body = Arriving::new(full, p.clone(), deadline);
        assert_eq!(p.budgets.known.available_permits(), 1, "nothing taken yet");
        let data = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&data[..], b"msg");
        assert_eq!(p.budgets.known.available_permits(), 0, "taken on arrival");
        assert!(!p.release(), "not shed");
        assert_eq!(p.budgets.known.available_permits(), 1, "given back");
    }

    #[tokio::test]
    async fn a_body_that_does_not_arrive_ends_the_call() {
        use http_body_util::BodyExt as _;
        let p = place(1);
        let deadline = Instant::now() + Duration::from_millis(50);
        let mut body = Arriving::new(Body::new(Silent), p.clone(), deadline);
        let status = body.frame().await.unwrap().unwrap_err();
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(
            p.budgets.known.available_permits(),
            1,
            "it never held a place"
        );
    }
}
