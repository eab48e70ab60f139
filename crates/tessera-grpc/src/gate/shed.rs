//! [`Shed`]: the bound on calls in flight, and the explanation of tonic's
//! bare "message too large" status (see the stack in the `tessera` crate's
//! `app.rs`, and [`crate::gate`] for how paths are classified).

use super::{BoxFuture, Class, classify, overloaded, refuse};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::Semaphore;
use tonic::Status;
use tonic::body::Body;

/// Layer: bound the calls in flight (see the module).
#[derive(Clone)]
pub struct Shed {
    in_flight: Arc<Semaphore>,
    on_shed: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Shed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shed")
            .field("available", &self.in_flight.available_permits())
            .finish_non_exhaustive()
    }
}

impl Shed {
    /// At most `max_in_flight` calls at once; `on_shed` counts refusals.
    pub fn new(max_in_flight: usize, on_shed: Arc<dyn Fn() + Send + Sync>) -> Self {
        Self {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            on_shed,
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

impl<S, B> tower::Service<http::Request<B>> for Shedding<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let permit = if classify(req.uri().path()) == Class::Health {
            None
        } else {
            match self.shed.in_flight.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    (self.shed.on_shed)();
                    let response = refuse(
                        &req,
                        overloaded(
                            "the server is at its limit of calls in flight; retry with backoff",
                        ),
                    );
                    return Box::pin(async move { Ok(response) });
                }
            }
        };
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            drop(permit);
            Ok(explain_oversize(response))
        })
    }
}

/// tonic refuses a message over the decoding limit with a bare
/// `OUT_OF_RANGE` (and never reads the body past its length prefix). Say
/// which field and why, like every other bad input. The status comes in the
/// headers of a trailers-only response or in the trailers.
fn explain_oversize(response: http::Response<Body>) -> http::Response<Body> {
    if is_oversize(response.headers()) {
        let response = oversize_status().into_http();
        log_status(response.headers());
        return response;
    }
    log_status(response.headers());
    response.map(|body| Body::new(ExplainOversize(body)))
}

/// Every error status sent, at DEBUG with its message and details: what an
/// operator needs to see why calls fail, and what the test suite's log
/// scan searches for leaked secrets (no status may carry one).
fn log_status(headers: &http::HeaderMap) {
    if headers.get("grpc-status").is_none_or(|s| s == "0")
        || !tracing::enabled!(tracing::Level::DEBUG)
    {
        return;
    }
    if let Some(status) = Status::from_header_map(headers) {
        tracing::debug!(
            code = ?status.code(),
            message = status.message(),
            details = %String::from_utf8_lossy(status.details()),
            "call answered with an error"
        );
    }
}

fn is_oversize(headers: &http::HeaderMap) -> bool {
    headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers.get("grpc-message").is_some_and(|m| {
            // grpc-message is percent-encoded on the wire.
            m.to_str()
                .is_ok_and(|m| m.contains("too large") || m.contains("too%20large"))
        })
}

fn oversize_status() -> Status {
    crate::invalid(
        "request",
        "the message is larger than this RPC accepts (see the README's limits)",
    )
}

/// A response body whose trailers are rewritten by [`explain_oversize`].
struct ExplainOversize(Body);

impl http_body::Body for ExplainOversize {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.get_mut().0).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = match frame.into_trailers() {
                    Ok(trailers) if is_oversize(&trailers) => {
                        let mut status =
                            oversize_status().into_http::<Body>().into_parts().0.headers;
                        status.remove(http::header::CONTENT_TYPE);
                        log_status(&status);
                        http_body::Frame::trailers(status)
                    }
                    Ok(trailers) => {
                        log_status(&trailers);
                        http_body::Frame::trailers(trailers)
                    }
                    Err(frame) => frame,
                };
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}
