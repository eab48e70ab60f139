//! [`Shed`]: the bound on calls in flight (see the stack in the `tessera`
//! crate's `app.rs`, and [`crate::gate`] for how paths are classified).

use super::{Class, classify, overloaded};
use crate::guard::{Guard, Guarded};
use crate::refusal::{Refusal, refuse};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::body::Body;

/// Layer: bound the calls in flight (see the module).
#[derive(Clone)]
pub struct Shed {
    in_flight: Arc<Semaphore>,
}

impl std::fmt::Debug for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shed")
            .field("available", &self.in_flight.available_permits())
            .finish()
    }
}

impl Shed {
    /// At most `max_in_flight` calls at once. A refusal carries
    /// [`Refusal::Shed`], which the observing layer counts.
    pub fn new(max_in_flight: usize) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
        }
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

/// A call's place under the bound, given back with its response headers.
#[derive(Debug)]
pub struct Slot(Option<OwnedSemaphorePermit>);

impl Guard for Slot {
    fn answered(&mut self, response: http::Response<Body>) -> http::Response<Body> {
        self.0 = None;
        response
    }
}

impl<S, B> tower::Service<http::Request<B>> for Shedding<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Guarded<S::Future, Slot>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if classify(req.uri().path()) == Class::Health {
            return Guarded::admitted(self.inner.call(req), Slot(None));
        }
        match self.shed.in_flight.clone().try_acquire_owned() {
            Ok(permit) => Guarded::admitted(self.inner.call(req), Slot(Some(permit))),
            Err(_) => {
                let status =
                    overloaded("the server is at its limit of calls in flight; retry with backoff");
                Guarded::refused(refuse(&req, status, Some(Refusal::Shed)))
            }
        }
    }
}
