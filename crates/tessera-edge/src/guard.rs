//! The future of a layer that either answers a call itself or passes it on
//! holding something until the answer (a permit, the caller's id): an enum
//! over the layer below's future, so that passing a call on allocates
//! nothing.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tonic::body::Body;

/// What a layer holds for an admitted call until its response.
pub trait Guard {
    /// The response of the admitted call, as the layer hands it up.
    fn answered(&mut self, response: http::Response<Body>) -> http::Response<Body>;
}

pin_project_lite::pin_project! {
    /// A call answered by the layer itself, or admitted with its guard.
    #[project = GuardedProj]
    pub enum Guarded<F, G> {
        /// Answered here (taken when polled).
        Refused { response: Option<http::Response<Body>> },
        /// Passed on.
        Admitted { #[pin] call: F, guard: G },
    }
}

impl<F, G> Guarded<F, G> {
    /// Answers with `response`.
    pub fn refused(response: http::Response<Body>) -> Self {
        Self::Refused {
            response: Some(response),
        }
    }

    /// Passes `call` on, holding `guard`.
    pub fn admitted(call: F, guard: G) -> Self {
        Self::Admitted { call, guard }
    }
}

impl<F, G, E> Future for Guarded<F, G>
where
    F: Future<Output = Result<http::Response<Body>, E>>,
    G: Guard,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            // Polled again after it answered: nothing more will come.
            GuardedProj::Refused { response } => response
                .take()
                .map_or(Poll::Pending, |r| Poll::Ready(Ok(r))),
            GuardedProj::Admitted { call, guard } => {
                Poll::Ready(ready!(call.poll(cx)).map(|r| guard.answered(r)))
            }
        }
    }
}
