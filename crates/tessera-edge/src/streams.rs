//! Streams end when their caller no longer may call them, and at the
//! latest after a maximum lifetime. A unary call is authenticated when it
//! arrives and is over soon after; a stream (`WatchKeys`,
//! `WatchRevocations`) lives on, so after every reload of the callers file
//! its caller is checked again with the credential it was admitted with: a
//! caller removed, whose key or certificate name is gone, or whose right to
//! the RPC is withdrawn gets its stream ended with `UNAUTHENTICATED` or
//! `PERMISSION_DENIED`, audited (`stream_ended`). Every stream also ends
//! with `OK` after `--max-stream-lifetime-secs`; clients reconnect
//! (`WatchRevocations` with `after_id`, losing nothing).

use crate::refusal::status_trailers;
use crate::registry::CallerRegistry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tessera_api::status;
use tessera_proto::v1::ErrorReason;
use tessera_telemetry::audit;
use tonic::body::Body;
use tonic::{Code, Status};

/// The contract's server-streaming RPCs, by method name.
pub(crate) const STREAMS: [&str; 2] = ["WatchKeys", "WatchRevocations"];

/// The credential a stream's caller was admitted with.
pub(crate) enum Credential {
    /// A service key (kept in memory only, to be checked again).
    Key(String),
    /// A verified client certificate's names.
    Names(Arc<[String]>),
}

/// What bounds one stream.
pub(crate) struct StreamBound {
    pub registry: Arc<CallerRegistry>,
    pub rpc: &'static str,
    /// The caller's id and credential; `None` for an anonymous stream,
    /// bounded by its lifetime only.
    pub caller: Option<(String, Credential)>,
    pub lifetime: Duration,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Lifetime,
    CallerRemoved,
    RightWithdrawn,
}

impl StreamBound {
    /// `body`, ended by this bound.
    pub(crate) fn bound(self, body: Body) -> Body {
        let caller = self.caller.as_ref().map(|(id, _)| id.clone());
        let rpc = self.rpc;
        Body::new(Bounded {
            body,
            end: Some(Box::pin(self.ending())),
            caller,
            rpc,
        })
    }

    /// Resolves when the stream must end.
    async fn ending(self) -> Ending {
        let mut changes = self.registry.changes();
        let lifetime = tokio::time::sleep(self.lifetime);
        tokio::pin!(lifetime);
        loop {
            tokio::select! {
                () = &mut lifetime => return Ending::Lifetime,
                changed = changes.changed() => {
                    if changed.is_err() {
                        // The registry is gone: only the lifetime is left.
                        (&mut lifetime).await;
                        return Ending::Lifetime;
                    }
                    if let Some(ending) = self.recheck() {
                        return ending;
                    }
                }
            }
        }
    }

    /// The caller checked against the callers file now in force.
    fn recheck(&self) -> Option<Ending> {
        let (id, credential) = self.caller.as_ref()?;
        let guard = self.registry.load();
        let callers = &guard.as_ref()?.callers;
        let found = match credential {
            Credential::Key(key) => callers.by_key(key),
            Credential::Names(names) => callers.by_tls_name(names.iter().map(String::as_str)),
        };
        match found {
            Some(c) if c.id == *id => {
                // WatchKeys needs any known caller; the others their right.
                let granted = self.rpc == "WatchKeys" || c.may_call(self.rpc);
                (!granted).then_some(Ending::RightWithdrawn)
            }
            _ => Some(Ending::CallerRemoved),
        }
    }
}

impl Ending {
    fn status(self, caller: &str, rpc: &str) -> Status {
        match self {
            Self::Lifetime => Status::new(Code::Ok, ""),
            Self::CallerRemoved => status(
                Code::Unauthenticated,
                ErrorReason::CallerUnknown,
                "the callers file in force no longer admits this caller; the stream ends",
            ),
            Self::RightWithdrawn => status(
                Code::PermissionDenied,
                ErrorReason::CallerNotAllowed,
                format!("caller {caller} may no longer call {rpc}; the stream ends"),
            ),
        }
    }

    fn cause(self) -> &'static str {
        match self {
            Self::Lifetime => "lifetime",
            Self::CallerRemoved => "caller_removed",
            Self::RightWithdrawn => "right_withdrawn",
        }
    }
}

/// A stream's response body, ended by its bound.
struct Bounded {
    body: Body,
    /// `None` once the stream is over.
    end: Option<Pin<Box<dyn Future<Output = Ending> + Send>>>,
    caller: Option<String>,
    rpc: &'static str,
}

impl http_body::Body for Bounded {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let me = self.get_mut();
        let Some(end) = me.end.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(ending) = end.as_mut().poll(cx) {
            me.end = None;
            let caller = me.caller.as_deref().unwrap_or(audit::UNKNOWN);
            audit::stream_ended(caller, me.rpc, ending.cause());
            let trailers = status_trailers(&ending.status(caller, me.rpc));
            return Poll::Ready(Some(Ok(http_body::Frame::trailers(trailers))));
        }
        let polled = Pin::new(&mut me.body).poll_frame(cx);
        if let Poll::Ready(None | Some(Err(_))) = &polled {
            me.end = None;
        }
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && frame.is_trailers()
        {
            me.end = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.end.is_none() || self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_streams_are_the_contracts_server_streaming_rpcs() {
        use prost::Message as _;
        let set =
            prost_types::FileDescriptorSet::decode(tessera_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut streaming: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| &f.service)
            .flat_map(|s| &s.method)
            .filter(|m| m.server_streaming())
            .map(|m| m.name().to_owned())
            .collect();
        streaming.sort();
        assert_eq!(streaming, super::STREAMS);
    }
}
