//! What the bench needs to be a client, and nothing of the server's: the
//! endpoint with the socket options a production client sets, a service
//! key presented on every call, and a new service key with its hash for a
//! callers file (the format `tessera callers add` prints).

use base64::Engine as _;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

/// A channel presenting a service key (or nothing).
pub type KeyedChannel = InterceptedService<Channel, Key>;

/// An endpoint to `url` (plain `http://`): `TCP_NODELAY`, TCP and HTTP/2
/// keepalive, as Tessera's own clients set them.
pub fn endpoint(url: &str) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("{url}: {e}"))?
        .tcp_nodelay(true)
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10)))
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone, Default)]
pub struct Key(Option<MetadataValue<Ascii>>);

impl Key {
    /// Presents `key`; `None` presents nothing.
    pub fn new(key: Option<&str>) -> Result<Self, String> {
        key.map(|k| {
            MetadataValue::try_from(format!("Bearer {k}"))
                .map_err(|_| "service key: not printable ASCII".to_owned())
        })
        .transpose()
        .map(Self)
    }
}

impl tonic::service::Interceptor for Key {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// A new service key (`tsk_` and 256 random bits, base64url) and the hex
/// SHA-256 a callers file stores for it.
pub fn new_service_key() -> Result<(String, String), String> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| "no randomness".to_owned())?;
    let key = format!(
        "tsk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    let hash = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    Ok((key, hash))
}
