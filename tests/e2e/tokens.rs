//! Hostile and unlucky tokens: each fails Verify with its own reason.

use crate::harness::{AUDIENCE, Backend, ISSUER, TestApp, on_both_backends, spawn_app};
use serde_json::{Value, json};
use tessera_domain::b64url_encode;
use tessera_proto::v1::{GetJwksRequest, IssueRequest, VerifyFailure};

on_both_backends!(
    wrong_audience,
    expired_and_not_yet_valid_with_an_injected_clock,
    tampered_payload,
    alg_none,
    hs256_signed_with_the_public_key,
    unknown_kid,
);

fn parts(token: &str) -> (Value, Value, String) {
    let mut it = token.split('.');
    let h = tessera_domain::b64url_decode(it.next().unwrap()).unwrap();
    let p = tessera_domain::b64url_decode(it.next().unwrap()).unwrap();
    (
        serde_json::from_slice(&h).unwrap(),
        serde_json::from_slice(&p).unwrap(),
        it.next().unwrap().to_owned(),
    )
}

fn enc(v: &Value) -> String {
    b64url_encode(v.to_string())
}

async fn token(app: &mut TestApp) -> String {
    app.issue("victim").await.access_token
}

async fn wrong_audience(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let t = app
        .issuer
        .issue(IssueRequest {
            subject: "u".into(),
            audience: "billing-api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    assert_eq!(app.verify(&t).await, Err(VerifyFailure::WrongAudience));
    assert_ne!(AUDIENCE, "billing-api");
    app.stop().await;
    d.cleanup().await;
}

async fn expired_and_not_yet_valid_with_an_injected_clock(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let t = token(&mut app).await;
    let skew = 30;
    let ttl = 15 * 60;
    d.clock.advance(ttl + skew - 1);
    assert_eq!(app.verify(&t).await, Ok(()), "one second before exp + skew");
    d.clock.advance(1);
    assert_eq!(app.verify(&t).await, Err(VerifyFailure::Expired));
    // Back before the token was minted, beyond the skew.
    d.clock.advance(-(ttl + skew) - skew - 1);
    assert_eq!(app.verify(&t).await, Err(VerifyFailure::NotYetValid));
    d.clock.advance(1);
    assert_eq!(app.verify(&t).await, Ok(()), "inside the skew");
    app.stop().await;
    d.cleanup().await;
}

async fn tampered_payload(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let t = token(&mut app).await;
    let (h, mut p, sig) = parts(&t);
    p["sub"] = json!("admin");
    let forged = format!("{}.{}.{sig}", enc(&h), enc(&p));
    assert_eq!(app.verify(&forged).await, Err(VerifyFailure::BadSignature));
    // Flipping one signature character also fails.
    let mut s = sig.into_bytes();
    s[10] = if s[10] == b'A' { b'B' } else { b'A' };
    let (hp, _) = t.rsplit_once('.').unwrap();
    let forged = format!("{hp}.{}", String::from_utf8(s).unwrap());
    assert_eq!(app.verify(&forged).await, Err(VerifyFailure::BadSignature));
    app.stop().await;
    d.cleanup().await;
}

async fn alg_none(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let t = token(&mut app).await;
    let (mut h, p, _) = parts(&t);
    h["alg"] = json!("none");
    for forged in [
        format!("{}.{}.", enc(&h), enc(&p)),
        format!("{}.{}.AAAA", enc(&h), enc(&p)),
    ] {
        assert_eq!(
            app.verify(&forged).await,
            Err(VerifyFailure::AlgorithmNotAllowed)
        );
    }
    app.stop().await;
    d.cleanup().await;
}

async fn hs256_signed_with_the_public_key(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let t = token(&mut app).await;
    let (mut h, p, _) = parts(&t);
    // The classic key-confusion attack: HMAC keyed with the public key,
    // in every form an attacker might try.
    let jwks = app
        .keys
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let jwk: Value = serde_json::from_str(&jwks.keys[0].jwk_json).unwrap();
    let x = tessera_domain::b64url_decode(jwk["x"].as_str().unwrap()).unwrap();
    let y = tessera_domain::b64url_decode(jwk["y"].as_str().unwrap()).unwrap();
    let point = [vec![4u8], x, y].concat();
    h["alg"] = json!("HS256");
    for secret in [
        point,
        jwks.keys[0].jwk_json.clone().into_bytes(),
        jwks.jwks_json.clone().into_bytes(),
    ] {
        let input = format!("{}.{}", enc(&h), enc(&p));
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
        let sig = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        let forged = format!("{input}.{}", b64url_encode(sig.as_ref()));
        assert_eq!(
            app.verify(&forged).await,
            Err(VerifyFailure::AlgorithmNotAllowed)
        );
    }
    // An allowed algorithm that is not the named key's own is refused too
    // (an RS256 or EdDSA header on our ES256 kid).
    for alg in ["RS256", "EdDSA", "PS256"] {
        h["alg"] = json!(alg);
        let forged = format!("{}.{}.AAAA", enc(&h), enc(&p));
        assert_eq!(
            app.verify(&forged).await,
            Err(VerifyFailure::AlgorithmNotAllowed),
            "{alg}"
        );
    }
    app.stop().await;
    d.cleanup().await;
}

async fn unknown_kid(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let t = token(&mut app).await;
    let (mut h, p, _) = parts(&t);
    // A well-signed token under a key we never published.
    use tessera_domain::keys::{Algorithm, KeyMaterial, SigningKey};
    let m = KeyMaterial::generate(Algorithm::Es256, "attacker").unwrap();
    let k = SigningKey::from_pkcs8("attacker", Algorithm::Es256, &m.pkcs8).unwrap();
    h["kid"] = json!("attacker");
    let input = format!("{}.{}", enc(&h), enc(&p));
    let forged = format!(
        "{input}.{}",
        b64url_encode(k.sign_raw(input.as_bytes()).unwrap())
    );
    assert_eq!(app.verify(&forged).await, Err(VerifyFailure::UnknownKey));
    // Same key id as ours, wrong key: the signature fails.
    let (h0, _, _) = parts(&t);
    let input = format!("{}.{}", enc(&h0), enc(&p));
    let forged = format!(
        "{input}.{}",
        b64url_encode(k.sign_raw(input.as_bytes()).unwrap())
    );
    assert_eq!(app.verify(&forged).await, Err(VerifyFailure::BadSignature));
    assert_eq!(p["iss"], ISSUER);
    app.stop().await;
    d.cleanup().await;
}
