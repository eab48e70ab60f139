//! The main flows: Issue → Verify → Revoke, revocation by jti, restart
//! persistence, the JWKS, and the RPCs that answer UNIMPLEMENTED for now.

use crate::harness::{
    AUDIENCE, Backend, ISSUER, decode_with_jwks, eventually, on_both_backends, spawn_app,
};
use serde_json::Value;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{GetJwksRequest, JtiTarget, RevokeRequest, VerifyFailure};

on_both_backends!(
    issue_verify_revoke,
    revoke_by_jti_is_idempotent,
    a_token_issued_before_a_restart_verifies_after_it,
    jwks_verifies_our_tokens_with_jsonwebtoken,
    health_reports_serving_for_every_service,
    graceful_shutdown_ends_open_streams,
);

async fn issue_verify_revoke(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let issued = app.issue("user-1").await;
    assert_eq!(issued.refresh_token.len(), 43, "256 bits of base64url");
    assert!(!issued.family_id.is_empty());
    let r = app
        .verify_with(
            &issued.access_token,
            tessera_proto::v1::Consistency::Default,
        )
        .await;
    assert!(r.valid, "{:?}", r.failure());
    let c = r.claims.unwrap();
    assert_eq!(c.subject, "user-1");
    assert_eq!(c.issuer, ISSUER);
    assert_eq!(c.audience, [AUDIENCE]);
    assert_eq!(c.token_id, issued.access_token_id);
    assert_eq!(c.family_id, issued.family_id);
    assert_eq!(c.scopes, ["orders:read"]);
    assert_eq!(
        c.expires_at.unwrap().seconds,
        issued.access_token_expires_at.unwrap().seconds
    );
    assert_eq!(app.verify_strong(&issued.access_token).await, Ok(()));

    let other = app.issue("user-1").await;
    let rev = app
        .revocation
        .revoke(RevokeRequest {
            target: Some(Target::Token(issued.access_token.clone())),
            reason: "logout".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rev.revoked, 1);
    assert_eq!(rev.jti, issued.access_token_id);
    assert_eq!(
        app.verify(&issued.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert_eq!(
        app.verify_strong(&issued.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert_eq!(
        app.verify(&other.access_token).await,
        Ok(()),
        "only that token"
    );
    app.stop().await;
    d.cleanup().await;
}

async fn revoke_by_jti_is_idempotent(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let issued = app.issue("user-2").await;
    let req = || RevokeRequest {
        target: Some(Target::Jti(JtiTarget {
            jti: issued.access_token_id.clone(),
            expires_at: issued.access_token_expires_at,
        })),
        reason: String::new(),
    };
    let first = app.revocation.revoke(req()).await.unwrap().into_inner();
    assert_eq!(first.revoked, 1);
    // The entry lasts until the token would have expired, plus the skew.
    assert_eq!(
        first.revoked_until.unwrap().seconds,
        issued.access_token_expires_at.unwrap().seconds + 30
    );
    let again = app.revocation.revoke(req()).await.unwrap().into_inner();
    assert_eq!(again.revoked, 0, "already revoked");
    assert_eq!(
        app.verify(&issued.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    app.stop().await;
    d.cleanup().await;
}

async fn a_token_issued_before_a_restart_verifies_after_it(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let kept = app.issue("user-3").await;
    let revoked = app.issue("user-3").await;
    app.revocation
        .revoke(RevokeRequest {
            target: Some(Target::Token(revoked.access_token.clone())),
            reason: String::new(),
        })
        .await
        .unwrap();
    let jwks_before = app
        .keys
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    app.stop().await;

    let mut app = d.start().await;
    let jwks_after = app
        .keys
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        jwks_before.jwks_json, jwks_after.jwks_json,
        "same key reused"
    );
    assert_eq!(jwks_before.etag, jwks_after.etag);
    assert_eq!(app.verify(&kept.access_token).await, Ok(()));
    assert_eq!(
        app.verify(&revoked.access_token).await,
        Err(VerifyFailure::Revoked),
        "revocations survive a restart"
    );
    app.stop().await;
    d.cleanup().await;
}

async fn jwks_verifies_our_tokens_with_jsonwebtoken(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let jwks = app
        .keys
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks.jwks_json).unwrap();
    // The signing key and its standby.
    assert_eq!(set.keys.len(), 2);
    let raw: Value = serde_json::from_str(&jwks.jwks_json).unwrap();
    assert_eq!(jwks.keys.len(), 2);
    for (k, listed) in raw["keys"].as_array().unwrap().iter().zip(&jwks.keys) {
        assert_eq!(k["alg"], "ES256");
        assert_eq!(k["use"], "sig");
        assert_eq!(k["kty"], "EC");
        assert!(k.get("d").is_none(), "never the private part");
        assert_eq!(listed.kid, k["kid"]);
    }
    assert!(jwks.max_age_seconds > 0 && jwks.etag.starts_with('"'));

    // A third party verifies with nothing but the JWKS.
    let issued = app.issue("user-4").await;
    let claims = decode_with_jwks(&jwks.jwks_json, &issued.access_token);
    assert_eq!(claims["sub"], "user-4");
    for claim in [
        "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "sid", "ver", "scope",
    ] {
        assert!(claims.get(claim).is_some(), "RFC 9068 claim {claim}");
    }
    app.stop().await;
    d.cleanup().await;
}

async fn health_reports_serving_for_every_service(backend: Backend) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let (d, app) = spawn_app(backend).await;
    let h = HealthClient::new(app.channel.clone());
    for service in [
        "",
        "tessera.v1.IssuerService",
        "tessera.v1.KeyService",
        "tessera.v1.IntrospectionService",
        "tessera.v1.RevocationService",
    ] {
        eventually(&format!("{service:?} SERVING"), || {
            let mut h = h.clone();
            async move {
                h.check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
            }
        })
        .await;
    }
    app.stop().await;
    d.cleanup().await;
}

async fn graceful_shutdown_ends_open_streams(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let mut stream = app
        .keys
        .watch_keys(tessera_proto::v1::WatchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(
        first.keys.len(),
        2,
        "the current set (a signing key and its standby) comes first"
    );
    // Shutdown must not wait forever on the open stream. (The bound is a
    // liveness check, not a speed target.)
    tokio::time::timeout(std::time::Duration::from_secs(10), app.stop())
        .await
        .expect("graceful shutdown completed with a stream open");
    let end = stream.message().await;
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "the stream ended: {end:?}"
    );
    d.cleanup().await;
}
