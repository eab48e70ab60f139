//! The design Tessera replaces, for comparison on the same box: a verifier
//! that checks the signature with `jsonwebtoken` against the issuer's JWKS
//! and asks Redis `EXISTS deny:<jti>` on every call. It serves the same
//! `IntrospectionService.Verify` (and gRPC health) so the same load
//! generator drives both.

use deadpool_redis::redis::{self, AsyncCommands};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use tessera_proto::v1::introspection_service_server::{
    IntrospectionService, IntrospectionServiceServer,
};
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::{
    GetJwksRequest, VerifiedClaims, VerifyFailure, VerifyRequest, VerifyResponse,
};
use tonic::{Request, Response, Status};

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    aud: Audience,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    #[serde(default)]
    sid: String,
    #[serde(default)]
    ver: u64,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    client_id: String,
}

fn ts(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

struct Peer {
    keys: HashMap<String, (DecodingKey, Validation)>,
    redis: redis::aio::MultiplexedConnection,
}

impl Peer {
    fn invalid(failure: VerifyFailure) -> Response<VerifyResponse> {
        Response::new(VerifyResponse {
            valid: false,
            failure: failure.into(),
            claims: None,
        })
    }
}

#[tonic::async_trait]
impl IntrospectionService for Peer {
    async fn verify(
        &self,
        request: Request<VerifyRequest>,
    ) -> Result<Response<VerifyResponse>, Status> {
        let r = request.into_inner();
        let Ok(header) = jsonwebtoken::decode_header(&r.token) else {
            return Ok(Self::invalid(VerifyFailure::Malformed));
        };
        let Some((key, validation)) = header.kid.as_ref().and_then(|k| self.keys.get(k)) else {
            return Ok(Self::invalid(VerifyFailure::UnknownKey));
        };
        let mut validation = validation.clone();
        validation.set_audience(&[&r.expected_audience]);
        let c = match jsonwebtoken::decode::<Claims>(&r.token, key, &validation) {
            Ok(d) => d.claims,
            Err(_) => return Ok(Self::invalid(VerifyFailure::BadSignature)),
        };
        let mut redis = self.redis.clone();
        let denied: bool = redis
            .exists(format!("deny:{}", c.jti))
            .await
            .map_err(|_| Status::unavailable("redis"))?;
        if denied {
            return Ok(Self::invalid(VerifyFailure::Revoked));
        }
        Ok(Response::new(VerifyResponse {
            valid: true,
            failure: VerifyFailure::Unspecified.into(),
            claims: Some(VerifiedClaims {
                issuer: c.iss,
                subject: c.sub,
                audience: match c.aud {
                    Audience::One(a) => vec![a],
                    Audience::Many(a) => a,
                },
                expires_at: ts(c.exp),
                issued_at: ts(c.iat),
                not_before: ts(c.nbf),
                token_id: c.jti,
                family_id: c.sid,
                subject_version: c.ver,
                scopes: c.scope.split(' ').map(str::to_owned).collect(),
                client_id: c.client_id,
                kid: header.kid.unwrap_or_default(),
                all_claims: None,
            }),
        }))
    }
}

/// Serves the peer on `listen` until killed: keys from `issuer_endpoint`'s
/// `GetJwks`, deny-list in `redis_url`.
pub async fn serve(
    listen: SocketAddr,
    issuer_endpoint: &str,
    issuer: &str,
    redis_url: &str,
) -> Result<(), String> {
    let keys = fetch_keys(issuer_endpoint, issuer).await?;
    let redis = connect_redis(redis_url).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("listen {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<IntrospectionServiceServer<Peer>>()
        .await;
    println!("peer listening on {addr}");
    // The socket and HTTP/2 options of Tessera's own server.
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .max_concurrent_streams(Some(256))
        .timeout(std::time::Duration::from_secs(10))
        .add_service(health_service)
        .add_service(IntrospectionServiceServer::new(Peer { keys, redis }))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
        .map_err(|e| e.to_string())
}

/// The issuer's published keys by kid, each with the validation a token it
/// signed gets: its own algorithm, our issuer, the registered claims
/// required. A JWK without a kid, an algorithm or a readable key is skipped.
async fn fetch_keys(
    issuer_endpoint: &str,
    issuer: &str,
) -> Result<HashMap<String, (DecodingKey, Validation)>, String> {
    let ch = crate::client::endpoint(issuer_endpoint)?
        .connect()
        .await
        .map_err(|e| format!("issuer endpoint: {e}"))?;
    let jwks = KeyServiceClient::new(ch)
        .get_jwks(GetJwksRequest {})
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner()
        .jwks_json;
    let set: JwkSet = serde_json::from_str(&jwks).map_err(|e| format!("JWKS: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) else {
            continue;
        };
        let Some(alg) = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse().ok())
        else {
            continue;
        };
        let mut v = Validation::new(alg);
        v.set_issuer(&[issuer]);
        v.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud", "sub"]);
        keys.insert(kid, (key, v));
    }
    Ok(keys)
}

/// One multiplexed connection to the deny-list, with `TCP_NODELAY` like
/// Tessera's own Redis connections.
async fn connect_redis(redis_url: &str) -> Result<redis::aio::MultiplexedConnection, String> {
    let info = redis::IntoConnectionInfo::into_connection_info(redis_url)
        .map_err(|e| format!("redis url: {e}"))?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
    redis::Client::open(info)
        .map_err(|e| format!("redis: {e}"))?
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("redis: {e}"))
}
