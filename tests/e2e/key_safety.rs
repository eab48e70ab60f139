//! Keys under stress and over their lifetime: compromise everywhere within a
//! second, exactly-once rotation across instances, unsafe schedules refused,
//! KEK rewrap without downtime, every algorithm end to end.

use crate::harness::eventually;
use crate::harness::{
    Backend, Deployment, TestApp, decode_with_jwks, issue_token, kid_of, verify_token,
};
use crate::keys::{jwks_kids, states, verify_load};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tessera_domain::schedule::KeySchedule;
use tessera_proto::v1::{
    CompromiseKeyRequest, GetJwksRequest, KeyState, RotateKeysRequest, VerifyFailure,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_key_fails_everywhere_within_a_second() {
    let mut d = Deployment::new(Backend::Distributed).await;
    d.keys = KeySchedule {
        publish_ahead: d.keys.jwks_max_age + 60,
        ..d.keys
    };
    let mut a = d.start().await;
    let mut b = d.start().await;
    let old = a.issue("lee").await;
    let k1 = kid_of(&old.access_token);
    // Rotate so that k1 is retiring and k2 signs.
    a.keys
        .rotate_keys(RotateKeysRequest::default())
        .await
        .unwrap();
    d.clock.advance(d.keys.publish_ahead);
    eventually("k2 signs on both", || {
        let (mut ia, mut ib) = (a.issuer.clone(), b.issuer.clone());
        let k1 = k1.clone();
        async move {
            let ta = issue_token(&mut ia, "lee").await;
            let tb = issue_token(&mut ib, "lee").await;
            kid_of(&ta) != k1 && kid_of(&tb) != k1
        }
    })
    .await;
    let fresh = b.issue("lee").await.access_token;
    assert_eq!(b.verify(&old.access_token).await, Ok(()));

    // Load on B with tokens of the other key, while A kills k1.
    let (stop, calls, failures) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let load: Vec<_> = (0..2)
        .map(|_| verify_load(&b, stop.clone(), calls.clone(), failures.clone()))
        .collect();
    let r = a
        .keys
        .compromise_key(CompromiseKeyRequest {
            kid: k1.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.key.unwrap().state(), KeyState::Compromised);
    assert!(r.new_active_key.is_none(), "k1 was not signing");
    assert!(r.estimate);
    // The kill has returned: how long until the other instance rejects.
    let took = eventually("the other instance rejects the killed key's token", || {
        let mut i = b.introspection.clone();
        let t = old.access_token.clone();
        async move {
            matches!(
                verify_token(&mut i, &t).await,
                Err(VerifyFailure::Revoked | VerifyFailure::UnknownKey)
            )
        }
    })
    .await;
    assert!(
        !jwks_kids(&mut a).await.contains(&k1),
        "left the JWKS at once"
    );
    let at_kill = calls.load(Ordering::Relaxed);
    eventually("the load runs on after the kill", || {
        let calls = calls.clone();
        async move { calls.load(Ordering::Relaxed) > at_kill + 200 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (n, f) = (
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    println!(
        "compromise of a retiring key: rejected on the other instance after {took:?}; {n} verifications of other tokens meanwhile, {f} failed"
    );
    assert_eq!(f, 0, "tokens of other keys are unaffected");
    assert_eq!(b.verify(&fresh).await, Ok(()));

    // Killing the signing key: another signs at once.
    let k2 = kid_of(&fresh);
    let r = a
        .keys
        .compromise_key(CompromiseKeyRequest {
            kid: k2.clone(),
            reason: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let k3 = r.new_active_key.expect("a new key signs at once").kid;
    assert_ne!(k3, k2);
    let took = eventually("the other instance rejects the killed key's token", || {
        let mut i = b.introspection.clone();
        let t = fresh.clone();
        async move { verify_token(&mut i, &t).await.is_err() }
    })
    .await;
    println!("compromise of the active key: rejected on the other instance after {took:?}");
    let t3 = a.issue("lee").await.access_token;
    assert_eq!(kid_of(&t3), k3);
    // B stops signing with the killed key too (on the kill's event, or at
    // its next schedule tick at the latest).
    eventually("B signs with the new key", || {
        let mut ib = b.issuer.clone();
        let k3 = k3.clone();
        async move { kid_of(&issue_token(&mut ib, "lee").await) == k3 }
    })
    .await;
    eventually("B verifies the new key's tokens", || {
        let mut i = b.introspection.clone();
        let t3 = t3.clone();
        async move { verify_token(&mut i, &t3).await.is_ok() }
    })
    .await;
    let unknown = a
        .keys
        .compromise_key(CompromiseKeyRequest {
            kid: "no-such-key".into(),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_rotate_exactly_once() {
    let d = Deployment::new(Backend::Distributed).await;
    let mut a = d.start().await;
    let mut b = d.start().await;
    // Both start on the same empty database: one first key, one standby.
    let count = |st: &[(String, KeyState)], s: KeyState| st.iter().filter(|(_, x)| *x == s).count();
    let tally = |st: &[(String, KeyState)]| {
        [KeyState::Active, KeyState::Pending, KeyState::Retiring].map(|s| count(st, s))
    };
    let st = states(&mut a).await;
    assert_eq!((st.len(), tally(&st)), (2, [1, 1, 0]), "{st:?}");
    // The hand-over reached by both instances' ticks at once.
    d.clock.advance(d.keys.rotation_period);
    // Both instances tick at the same moment (their timers run too).
    tokio::join!(a.tick(), b.tick());
    let st = states(&mut b).await;
    assert_eq!(
        (st.len(), tally(&st)),
        (3, [1, 1, 1]),
        "one hand-over and one new standby, not two: {st:?}"
    );
    // Rotations asked of both at once bring the new standby forward once.
    let (ra, rb) = tokio::join!(
        a.keys.rotate_keys(RotateKeysRequest::default()),
        b.keys.rotate_keys(RotateKeysRequest::default())
    );
    ra.unwrap();
    rb.unwrap();
    d.clock.advance(d.keys.publish_ahead);
    tokio::join!(a.tick(), b.tick());
    let st = states(&mut a).await;
    assert_eq!((st.len(), tally(&st)), (4, [1, 1, 2]), "{st:?}");
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_schedules_are_refused_at_start() {
    let d = Deployment::new(Backend::Embedded).await;
    for (keys, setting) in [
        (
            KeySchedule {
                publish_ahead: 120,
                ..d.keys
            },
            "key_publish_ahead",
        ),
        (
            KeySchedule {
                retire_after: 3600,
                ..d.keys
            },
            "key_retire_after",
        ),
    ] {
        let mut cfg = d.config();
        cfg.keys = keys;
        let err = tessera::Application::build(cfg).await.unwrap_err();
        assert!(err.to_string().contains(setting), "{err}");
    }
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_move_to_a_new_kek_without_downtime() {
    use tessera::kek::KekSource;
    // A shared store: the instances keep serving while the rewrap runs (an
    // embedded store's one server is stopped for it: `operator_cli.rs`).
    let d = Deployment::new(Backend::Distributed).await;
    let mut app = d.start().await;
    let before = app.issue("mia").await;
    let old_kek = d.data_dir.join("kek");
    let new_kek = d.data_dir.join("kek.new");
    std::fs::write(
        &new_kek,
        tessera_domain::b64url_encode(tessera_domain::seal::Kek::generate_bytes().expose()),
    )
    .unwrap();
    app.stop().await;

    // The new instance runs with the new KEK and the old one as previous.
    let start_with = |kek: &std::path::Path, previous: Option<&std::path::Path>| {
        let mut cfg = d.config();
        cfg.kek = KekSource::File(kek.to_owned());
        cfg.previous_kek = previous.map(|p| KekSource::File(p.to_owned()));
        cfg
    };
    let (mut app, stop, handle) = start(start_with(&new_kek, Some(&old_kek))).await;
    assert_eq!(app.verify(&before.access_token).await, Ok(()));
    // While it serves, the real binary rewraps the stored keys.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["keys", "rewrap", "--database-url"])
        .arg(d.database_url.as_deref().unwrap())
        .arg("--old-kek-file")
        .arg(&old_kek)
        .arg("--new-kek-file")
        .arg(&new_kek)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["rewrapped"], 3,
        "the signing key, its standby and the refresh secret"
    );
    let refreshed = app.refresh(&before.refresh_token).await.unwrap();
    assert_eq!(app.verify(&refreshed.access_token).await, Ok(()));
    let _ = stop.send(());
    handle.await.unwrap().unwrap();

    // Afterwards the new KEK alone opens everything; the old one nothing.
    let (mut app, stop, handle) = start(start_with(&new_kek, None)).await;
    assert_eq!(app.verify(&refreshed.access_token).await, Ok(()));
    // The same successor secret: a grace replay still lands on the chain.
    let again = app.refresh(&before.refresh_token).await.unwrap();
    assert_eq!(again.refresh_token, refreshed.refresh_token);
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
    let err = tessera::Application::build(start_with(&old_kek, None))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("internal error") || err.to_string().contains("sealed"),
        "{err}"
    );
    d.cleanup().await;
}

/// Starts an app from a config (for tests that change the KEK).
async fn start(
    cfg: tessera::Config,
) -> (
    TestApp,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tessera::AppError>>,
) {
    crate::harness::start_config(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_signs_verifies_and_publishes() {
    use tessera_domain::keys::Algorithm;
    for alg in [
        Algorithm::Es256,
        Algorithm::EdDsa,
        Algorithm::Rs256,
        Algorithm::Ps256,
    ] {
        let mut d = Deployment::new(Backend::Embedded).await;
        d.keys.algorithm = alg;
        let mut app = d.start().await;
        let t = app.issue("nina").await.access_token;
        assert_eq!(app.verify(&t).await, Ok(()), "{alg:?}");
        let jwks = app
            .keys
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap()
            .into_inner();
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg.name());
        assert_eq!(decode_with_jwks(&jwks.jwks_json, &t)["sub"], "nina");
        app.stop().await;
        d.cleanup().await;
    }
}
