//! The issuer and the introspection service as separate processes (here:
//! separate applications), talking gRPC only: keys pushed by `WatchKeys`,
//! unknown kids refetched at a bounded rate, revocations reported over gRPC.

use crate::harness::{
    Backend, Deployment, TestApp, eventually, issue_token, kid_of, start_config, verify_token,
};
use crate::keys::states;
use std::time::Duration;
use tessera::Role;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{CompromiseKeyRequest, KeyState, VerifyFailure};
use tonic::Code;

/// How long until `app` verifies `token`.
async fn verified(app: &TestApp, token: &str) -> Duration {
    eventually("the token verifies", || {
        let mut i = app.introspection.clone();
        let t = token.to_owned();
        async move { verify_token(&mut i, &t).await.is_ok() }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn separate_services_learn_keys_by_stream_and_talk_grpc() {
    let d = Deployment::new(Backend::Distributed).await;
    // The issuer must name the revocation service before it exists.
    let port = crate::harness::free_port();
    let mut cfg = d.config();
    cfg.role = Role::Issuer;
    cfg.revocation_endpoint = Some(format!("http://127.0.0.1:{port}"));
    let (mut issuer, istop, ihandle) = start_config(cfg).await;
    let mut cfg = d.config();
    cfg.role = Role::Introspection;
    cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.issuer_endpoint = Some(format!("http://{}", issuer.addr));
    let (mut verifier, vstop, vhandle) = start_config(cfg).await;
    // A second issuer that applies its schedule only hourly: what it learns
    // of a kill, it learns from the event.
    let mut cfg = d.config();
    cfg.role = Role::Issuer;
    cfg.revocation_endpoint = Some(format!("http://127.0.0.1:{port}"));
    cfg.key_tick = Duration::from_secs(3600);
    let (issuer2, i2stop, i2handle) = start_config(cfg).await;

    let t1 = issuer.issue("olga").await;
    assert_eq!(verifier.verify(&t1.access_token).await, Ok(()));
    // Each process serves its own services only.
    let s = verifier.verify_with_issuer_missing().await;
    assert_eq!(s, Code::Unimplemented);
    let s = issuer
        .introspection
        .verify(tessera_proto::v1::VerifyRequest::default())
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unimplemented);
    // It says which role serves it (`tessera revoke` pointed at an issuer
    // prints this), with an ErrorInfo.
    assert!(
        s.message().contains("the introspection role serves it"),
        "{s:?}"
    );
    assert_eq!(crate::harness::reason(&s), "ERROR_REASON_NOT_IMPLEMENTED");

    // Kill the signing key on the issuer: the next key reaches the verifier
    // through WatchKeys, the killed one is rejected.
    let r = issuer
        .keys
        .compromise_key(CompromiseKeyRequest {
            kid: kid_of(&t1.access_token),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let t2 = issuer.issue("olga").await.access_token;
    assert_eq!(kid_of(&t2), r.new_active_key.unwrap().kid);
    let took = verified(&verifier, &t2).await;
    let switched = eventually("the other issuer signs with the next key", || {
        let mut i = issuer2.issuer.clone();
        let next = kid_of(&t2);
        async move { kid_of(&issue_token(&mut i, "olga").await) == next }
    })
    .await;
    println!("the other issuer stopped signing with the killed key after {switched:?}");
    let follower = verifier.follower.clone().unwrap();
    let before = follower.fetches();
    let started_before = follower.refetches_started();
    println!("a key published by the issuer verified in the introspection service after {took:?}");
    let old = verifier.verify(&t1.access_token).await;
    assert!(
        matches!(old, Err(VerifyFailure::Revoked | VerifyFailure::UnknownKey)),
        "{old:?}"
    );

    // Unknown kids (the killed key's, then random ones): one refetch, then
    // none for the rest of the interval (10 s here).
    let (h, p) = {
        let mut parts = t2.split('.');
        (
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        )
    };
    let _ = h;
    for i in 0..50 {
        let header =
            serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": format!("random-{i}")});
        let forged = format!(
            "{}.{p}.AAAA",
            tessera_domain::b64url_encode(header.to_string())
        );
        assert_eq!(
            verifier.verify(&forged).await,
            Err(VerifyFailure::UnknownKey)
        );
    }
    // Counted when started, so no waiting is needed to see the limit hold.
    let refetches = follower.refetches_started() - started_before;
    println!("51 tokens with unknown kids caused {refetches} key-set refetch(es)");
    assert_eq!(refetches, 1);
    eventually("the one refetch completes", || {
        let f = follower.clone();
        async move { f.fetches() > before }
    })
    .await;

    // Reuse caught on the issuer reaches the verifier over gRPC.
    // (A killed key does not end sessions: t1's family refreshes onto the
    // new key.)
    let s1 = issuer.refresh(&t1.refresh_token).await.unwrap();
    assert_eq!(kid_of(&s1.access_token), kid_of(&t2));
    let fresh = issuer.issue("olga").await;
    let next = issuer.refresh(&fresh.refresh_token).await.unwrap();
    d.clock.advance(60);
    assert!(issuer.refresh(&fresh.refresh_token).await.is_err());
    assert_eq!(
        verifier.verify(&next.access_token).await,
        Err(VerifyFailure::Revoked)
    );

    // Revoke{kid} on the revocation service: it asks the issuer's key
    // manager (over gRPC) to kill the key, then fans the kill out.
    let signing = kid_of(&issuer.issue("olga").await.access_token);
    let live = issuer.issue("olga").await.access_token;
    assert_eq!(verifier.revoke(Target::Kid(signing.clone())).await, 1);
    let st = states(&mut issuer).await;
    assert!(
        st.contains(&(signing.clone(), KeyState::Compromised)),
        "{st:?}"
    );
    assert_ne!(kid_of(&issuer.issue("olga").await.access_token), signing);
    assert!(verifier.verify(&live).await.is_err());

    let _ = vstop.send(());
    vhandle.await.unwrap().unwrap();
    let _ = i2stop.send(());
    i2handle.await.unwrap().unwrap();
    let _ = istop.send(());
    ihandle.await.unwrap().unwrap();
    d.cleanup().await;
}
