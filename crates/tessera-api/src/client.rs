//! The client side of a call from one Tessera service to another: the
//! service key this instance presents and the trace context of the span the
//! call is made in. The channel itself (socket options, TLS) is the edge's
//! (`tessera_edge::net::channel`).

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A channel to another Tessera service that presents this instance's
/// service key (if any) and the caller's trace context on every call.
pub type PeerChannel = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <service key>` to every outgoing call, and
/// the W3C trace context of the span it is made in
/// (`tessera_telemetry::trace::inject`: nothing unless tracing export is
/// on).
#[derive(Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer([redacted])"
        } else {
            "Bearer(none)"
        })
    }
}

impl Bearer {
    /// Presents `key`; `None` presents nothing.
    pub fn new(key: Option<&str>) -> Result<Self, String> {
        key.map(|k| {
            let mut v = MetadataValue::try_from(format!("Bearer {k}"))
                .map_err(|_| "service_key: not a printable ASCII key".to_owned())?;
            v.set_sensitive(true);
            Ok(v)
        })
        .transpose()
        .map(Self)
    }

    /// `channel`, presenting this key on every call.
    pub fn intercept(&self, channel: Channel) -> PeerChannel {
        InterceptedService::new(channel, self.clone())
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        tessera_telemetry::trace::inject(request.metadata_mut());
        Ok(request)
    }
}
