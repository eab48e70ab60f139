//! The verified-signature cache over the wire: a token seen before skips
//! only its signature check, and is still rejected after a revocation, at
//! its expiry and after its key is killed.

use crate::harness::{Backend, TestApp, kid_of, on_both_backends, spawn_app};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{CompromiseKeyRequest, Consistency, VerifyFailure};

/// Issues a token and verifies it twice, the second time from the cache.
async fn cached_token(app: &mut TestApp, subject: &str) -> (String, String) {
    let r = app.issue(subject).await;
    let before = app.ring.signatures().len();
    assert_eq!(app.verify(&r.access_token).await, Ok(()));
    assert_eq!(
        app.ring.signatures().len(),
        before + 1,
        "cached on first sight"
    );
    assert_eq!(app.verify(&r.access_token).await, Ok(()));
    assert_eq!(
        app.ring.signatures().len(),
        before + 1,
        "a hit adds nothing"
    );
    (r.access_token, r.family_id)
}

on_both_backends!(
    cached_tokens_fail_once_revoked,
    cached_tokens_fail_at_expiry,
    cached_tokens_fail_once_their_key_is_killed
);

async fn cached_tokens_fail_once_revoked(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let (by_token, _) = cached_token(&mut app, "ana").await;
    app.revoke(Target::Token(by_token.clone())).await;
    assert_eq!(app.verify(&by_token).await, Err(VerifyFailure::Revoked));

    let (by_family, family) = cached_token(&mut app, "ben").await;
    app.revoke(Target::FamilyId(family)).await;
    assert_eq!(app.verify(&by_family).await, Err(VerifyFailure::Revoked));

    let (by_subject, _) = cached_token(&mut app, "cy").await;
    app.revoke(Target::Subject("cy".into())).await;
    assert_eq!(app.verify(&by_subject).await, Err(VerifyFailure::Revoked));
    assert_eq!(
        app.verify_strong(&by_subject).await,
        Err(VerifyFailure::Revoked)
    );
    app.stop().await;
    d.cleanup().await;
}

async fn cached_tokens_fail_at_expiry(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let (token, _) = cached_token(&mut app, "dee").await;
    let exp = app.verify_with(&token, Consistency::Default).await;
    let exp = exp.claims.unwrap().expires_at.unwrap().seconds;
    let skew = d.config().policy.clock_skew;
    // One second before the end (exp plus skew) it still verifies...
    d.clock.advance(exp + skew - 1 - d.clock_now());
    assert_eq!(app.verify(&token).await, Ok(()));
    // ...and at the end it fails, and its entry is gone.
    d.clock.advance(1);
    let held = app.ring.signatures().len();
    assert_eq!(app.verify(&token).await, Err(VerifyFailure::Expired));
    assert_eq!(app.ring.signatures().len(), held - 1);
    app.stop().await;
    d.cleanup().await;
}

async fn cached_tokens_fail_once_their_key_is_killed(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let (token, _) = cached_token(&mut app, "eve").await;
    app.keys
        .compromise_key(CompromiseKeyRequest {
            kid: kid_of(&token),
            reason: "test".into(),
        })
        .await
        .unwrap();
    let r = app.verify(&token).await;
    assert!(
        matches!(r, Err(VerifyFailure::Revoked | VerifyFailure::UnknownKey)),
        "{r:?}"
    );
    // The key left the set, and its entries with it.
    assert_eq!(app.ring.signatures().len(), 0);
    app.stop().await;
    d.cleanup().await;
}
