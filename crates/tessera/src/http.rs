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
    // Built once, from the configuration only. Never from the request's
    // `Host` (or any forwarded header): the document is served with
    // `Cache-Control: public`, so one request with `Host: evil.example`
    // through a shared cache would point every discovery-based verifier
    // at an attacker's keys. The JWKS lives beside the discovery document,
    // which OpenID Connect Discovery §4 puts under the issuer URL, so its
    // scheme (https when the issuer is) and any path prefix are the issuer's.
    let body = discovery_document(&issuer, &algorithms);
    let config = move || {
        let max_age = keys.jwks().max_age;
        let body = body.clone();
        async move {
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

/// The OpenID Connect discovery document of `issuer`.
pub fn discovery_document(issuer: &str, algorithms: &[&str]) -> String {
    serde_json::json!({
        "issuer": issuer,
        "jwks_uri": format!("{}/.well-known/jwks.json", issuer.trim_end_matches('/')),
        "id_token_signing_alg_values_supported": algorithms,
        "token_endpoint_auth_methods_supported": ["none"],
    })
    .to_string()
}

/// `GET /metrics`: every metric in the OpenMetrics text format (which
/// Prometheus asks for and reads). Served on the gRPC port in every role.
pub fn metrics(metrics: Arc<tessera_telemetry::metrics::Metrics>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        tessera_telemetry::metrics::CONTENT_TYPE,
                    )],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jwks_uri_is_the_issuers() {
        for (issuer, want) in [
            (
                "https://auth.example.com",
                "https://auth.example.com/.well-known/jwks.json",
            ),
            (
                "https://auth.example.com/",
                "https://auth.example.com/.well-known/jwks.json",
            ),
            (
                "http://127.0.0.1:50051",
                "http://127.0.0.1:50051/.well-known/jwks.json",
            ),
            (
                "https://example.com/t1",
                "https://example.com/t1/.well-known/jwks.json",
            ),
        ] {
            let doc: serde_json::Value =
                serde_json::from_str(&discovery_document(issuer, &["ES256"])).unwrap();
            assert_eq!(doc["jwks_uri"], want);
            assert_eq!(doc["issuer"], issuer);
        }
    }
}
