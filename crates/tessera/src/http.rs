//! The JWKS over HTTP, on the gRPC port (HTTP/1.1 and HTTP/2 both accepted):
//! `GET /.well-known/jwks.json` and `GET /.well-known/openid-configuration`,
//! with `Cache-Control: max-age` from the key schedule and an `ETag`
//! (`If-None-Match` answers 304); and `GET /metrics`.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::sync::Arc;
use tessera_issuer::KeyManager;

/// The routes, to merge into the gRPC server's router.
pub fn routes(
    keys: Arc<KeyManager>,
    issuer: String,
    algorithms: Vec<&'static str>,
) -> axum::Router {
    let jwks_keys = keys.clone();
    let jwks = move |headers: HeaderMap| {
        let keys = jwks_keys.clone();
        async move { jwks_response(&keys, &headers) }
    };
    let config = move |headers: HeaderMap| {
        let keys = keys.clone();
        let issuer = issuer.clone();
        let algorithms = algorithms.clone();
        async move {
            // The JWKS lives beside this document, on the host the client used.
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            let body = serde_json::json!({
                "issuer": issuer,
                "jwks_uri": format!("http://{host}/.well-known/jwks.json"),
                "id_token_signing_alg_values_supported": algorithms,
                "token_endpoint_auth_methods_supported": ["none"],
            })
            .to_string();
            let max_age = keys.jwks().max_age;
            (
                [
                    (header::CONTENT_TYPE, "application/json".to_owned()),
                    (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
                ],
                body,
            )
        }
    };
    axum::Router::new()
        .route("/.well-known/jwks.json", get(jwks))
        .route("/.well-known/openid-configuration", get(config))
}

/// `GET /metrics`: every counter, Prometheus text format. Served on the
/// gRPC port in every role.
pub fn metrics(metrics: Arc<tessera_grpc::metrics::Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    m.render(),
                )
            }
        }),
    )
}

fn jwks_response(keys: &KeyManager, headers: &HeaderMap) -> Response {
    let doc = keys.jwks();
    let cache = format!("public, max-age={}", doc.max_age);
    let etag = HeaderValue::from_str(&doc.etag).unwrap_or(HeaderValue::from_static("\"\""));
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == doc.etag || t.trim() == "*")
        });
    if matches {
        return (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_str(&cache).unwrap_or(HeaderValue::from_static("no-cache")),
                ),
            ],
        )
            .into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/jwk-set+json"),
            ),
            (header::ETAG, etag),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_str(&cache).unwrap_or(HeaderValue::from_static("no-cache")),
            ),
        ],
        doc.json.clone(),
    )
        .into_response()
}
