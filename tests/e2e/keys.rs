//! Signing keys: the rotation cycle on an injected clock, rotation and
//! compromise under Verify load, exactly-once rotation across instances, the
//! HTTP JWKS, and refusal of unsafe schedules.

use crate::harness::{Backend, Deployment, TestApp, kid_of, on_both_backends, reason};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tessera_domain::schedule::KeySchedule;
use tessera_proto::v1::{
    CompromiseKeyRequest, GetJwksRequest, KeyState, ListKeysRequest, RetireKeyRequest,
    RotateKeysRequest, VerifyFailure,
};
use tonic::Code;

on_both_backends!(
    a_whole_rotation_cycle_on_the_injected_clock,
    rotation_under_verify_load_fails_nothing,
);

/// Polls `check` every 20 ms for up to 5 s.
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn states(app: &mut TestApp) -> Vec<(String, KeyState)> {
    app.keys
        .list_keys(ListKeysRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|k| {
            let s = k.state();
            (k.kid, s)
        })
        .collect()
}

async fn jwks_kids(app: &mut TestApp) -> Vec<String> {
    let mut kids: Vec<String> = app
        .keys
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .map(|k| k.kid)
        .collect();
    kids.sort();
    kids
}

async fn a_whole_rotation_cycle_on_the_injected_clock(backend: Backend) {
    let d = Deployment::new(backend).await;
    let s = d.keys;
    let mut app = d.start().await;
    let t1 = app.issue("kim").await.access_token;
    let k1 = kid_of(&t1);
    assert_eq!(jwks_kids(&mut app).await, std::slice::from_ref(&k1));

    // On demand: the next key is published now, signs publish_ahead later.
    let changed = app
        .keys
        .rotate_keys(RotateKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .changed;
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].state(), KeyState::Pending);
    let k2 = changed[0].kid.clone();
    assert_eq!(
        changed[0].activates_at.unwrap().seconds,
        d.clock_now() + s.publish_ahead
    );
    let mut both = vec![k1.clone(), k2.clone()];
    both.sort();
    assert_eq!(jwks_kids(&mut app).await, both, "published before it signs");

    // One second early: still the old key, whatever the ticks do.
    d.clock.advance(s.publish_ahead - 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t1 = app.issue("kim").await.access_token;
    assert_eq!(kid_of(&t1), k1);
    // On time: the new key signs, the old one still verifies.
    d.clock.advance(1);
    eventually("the new key signs", || {
        let mut issuer = app.issuer.clone();
        let k2 = k2.clone();
        async move {
            let t = issuer
                .issue(tessera_proto::v1::IssueRequest {
                    subject: "kim".into(),
                    audience: crate::harness::AUDIENCE.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .access_token;
            kid_of(&t) == k2
        }
    })
    .await;
    assert_eq!(
        app.verify(&t1).await,
        Ok(()),
        "tokens of the retiring key verify"
    );
    let st = states(&mut app).await;
    assert!(st.contains(&(k1.clone(), KeyState::Retiring)), "{st:?}");
    assert!(st.contains(&(k2.clone(), KeyState::Active)), "{st:?}");

    // RetireKey refuses while tokens may live.
    let err = app
        .keys
        .retire_key(RetireKeyRequest { kid: k1.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(reason(&err), "ERROR_REASON_KEY_STATE_INVALID");

    // retire_after later the old key leaves the JWKS by itself.
    d.clock.advance(s.retire_after);
    eventually("the old key is unpublished", || {
        let mut keys = app.keys.clone();
        let k2 = k2.clone();
        async move {
            let kids: Vec<String> = keys
                .get_jwks(GetJwksRequest {})
                .await
                .unwrap()
                .into_inner()
                .keys
                .into_iter()
                .map(|k| k.kid)
                .collect();
            kids == [k2]
        }
    })
    .await;
    let st = states(&mut app).await;
    assert!(st.contains(&(k1.clone(), KeyState::Retired)), "{st:?}");

    // The same set over HTTP, with cache validators.
    let (status, headers, body) = app.http_get("/.well-known/jwks.json", "").await;
    assert_eq!(status, 200);
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        header("cache-control"),
        format!("public, max-age={}", s.jwks_max_age)
    );
    let etag = header("etag");
    assert!(etag.starts_with('"'));
    let jwks: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(jwks["keys"][0]["kid"], k2.as_str());
    let (status, _, _) = app
        .http_get(
            "/.well-known/jwks.json",
            &format!("If-None-Match: {etag}\r\n"),
        )
        .await;
    assert_eq!(status, 304);
    let (status, _, body) = app.http_get("/.well-known/openid-configuration", "").await;
    assert_eq!(status, 200);
    let conf: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(conf["issuer"], crate::harness::ISSUER);
    assert!(
        conf["jwks_uri"]
            .as_str()
            .unwrap()
            .ends_with("/.well-known/jwks.json")
    );
    assert!(
        !conf["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    app.stop().await;
    d.cleanup().await;
}

/// Verify calls in a loop on fresh tokens until `stop`; counts calls and
/// failures.
fn verify_load(
    app: &TestApp,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let mut issuer = app.issuer.clone();
    let mut introspection = app.introspection.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let t = issuer
                .issue(tessera_proto::v1::IssueRequest {
                    subject: "load".into(),
                    audience: crate::harness::AUDIENCE.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .access_token;
            for _ in 0..20 {
                let r = introspection
                    .verify(tessera_proto::v1::VerifyRequest {
                        token: t.clone(),
                        expected_audience: crate::harness::AUDIENCE.into(),
                        expected_kind: tessera_proto::v1::TokenKind::Access.into(),
                        consistency: tessera_proto::v1::Consistency::Default.into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                calls.fetch_add(1, Ordering::Relaxed);
                if !r.valid {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

async fn rotation_under_verify_load_fails_nothing(backend: Backend) {
    let mut d = Deployment::new(backend).await;
    // Publish-ahead shorter than the token life, so the clock jump over it
    // expires nothing and any failure would be the rotation's.
    d.keys = KeySchedule {
        publish_ahead: d.keys.jwks_max_age + 60,
        ..d.keys
    };
    let mut app = d.start().await;
    let old = app.issue("load").await.access_token;
    let (stop, calls, failures) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let load: Vec<_> = (0..4)
        .map(|_| verify_load(&app, stop.clone(), calls.clone(), failures.clone()))
        .collect();
    eventually("the load runs", || {
        let calls = calls.clone();
        async move { calls.load(Ordering::Relaxed) > 20 }
    })
    .await;
    let before = calls.load(Ordering::Relaxed);
    app.keys
        .rotate_keys(RotateKeysRequest::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.clock.advance(d.keys.publish_ahead);
    eventually("the new key signs", || {
        let mut issuer = app.issuer.clone();
        let old = old.clone();
        async move {
            let t = issuer
                .issue(tessera_proto::v1::IssueRequest {
                    subject: "load".into(),
                    audience: crate::harness::AUDIENCE.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .access_token;
            kid_of(&t) != kid_of(&old)
        }
    })
    .await;
    let switched = calls.load(Ordering::Relaxed);
    eventually("the load runs on after the switch", || {
        let calls = calls.clone();
        async move { calls.load(Ordering::Relaxed) > switched + 20 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(app.verify(&old).await, Ok(()));
    let (n, f) = (
        calls.load(Ordering::Relaxed),
        failures.load(Ordering::Relaxed),
    );
    println!(
        "{backend:?}: rotation under load: {n} verifications ({before} before the rotation, {} after the new key signed), {f} failed",
        n - switched
    );
    assert_eq!(f, 0);
    app.stop().await;
    d.cleanup().await;
}

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
            let req = || tessera_proto::v1::IssueRequest {
                subject: "lee".into(),
                audience: crate::harness::AUDIENCE.into(),
                ..Default::default()
            };
            let ta = ia.issue(req()).await.unwrap().into_inner().access_token;
            let tb = ib.issue(req()).await.unwrap().into_inner().access_token;
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
    let start = Instant::now();
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
    let mut seen = b.verify(&old.access_token).await;
    while seen.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not rejected within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        seen = b.verify(&old.access_token).await;
    }
    let took = start.elapsed();
    assert!(matches!(
        seen,
        Err(VerifyFailure::Revoked | VerifyFailure::UnknownKey)
    ));
    assert!(
        !jwks_kids(&mut a).await.contains(&k1),
        "left the JWKS at once"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    let start = Instant::now();
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
    let mut seen = b.verify(&fresh).await;
    while seen.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "not rejected within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        seen = b.verify(&fresh).await;
    }
    println!(
        "compromise of the active key: rejected on the other instance after {:?}",
        start.elapsed()
    );
    let t3 = a.issue("lee").await.access_token;
    assert_eq!(kid_of(&t3), k3);
    eventually("B verifies the new key's tokens", || {
        let mut i = b.introspection.clone();
        let t3 = t3.clone();
        async move {
            i.verify(tessera_proto::v1::VerifyRequest {
                token: t3,
                expected_audience: crate::harness::AUDIENCE.into(),
                expected_kind: tessera_proto::v1::TokenKind::Access.into(),
                consistency: tessera_proto::v1::Consistency::Default.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .valid
        }
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
    // Both start on the same empty database: one first key.
    let count = |st: &[(String, KeyState)], s: KeyState| st.iter().filter(|(_, x)| *x == s).count();
    let st = states(&mut a).await;
    assert_eq!((st.len(), count(&st, KeyState::Active)), (1, 1), "{st:?}");
    // The schedule's publish point reached by both instances' ticks at once.
    d.clock
        .advance(d.keys.rotation_period - d.keys.publish_ahead);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = states(&mut b).await;
    assert_eq!(
        count(&st, KeyState::Pending),
        1,
        "one next key, not two: {st:?}"
    );
    // Rotations asked of both at once change nothing more.
    let (ra, rb) = tokio::join!(
        a.keys.rotate_keys(RotateKeysRequest::default()),
        b.keys.rotate_keys(RotateKeysRequest::default())
    );
    ra.unwrap();
    rb.unwrap();
    d.clock.advance(d.keys.publish_ahead);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = states(&mut a).await;
    assert_eq!(st.len(), 2, "{st:?}");
    assert_eq!(count(&st, KeyState::Active), 1, "{st:?}");
    assert_eq!(count(&st, KeyState::Retiring), 1, "{st:?}");
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
    let d = Deployment::new(Backend::Embedded).await;
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
        .args(["keys", "rewrap", "--data-dir"])
        .arg(&d.data_dir)
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
    assert_eq!(report["rewrapped"], 2, "one key and the refresh secret");
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
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks.jwks_json).unwrap();
        let header = jsonwebtoken::decode_header(&t).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg.name());
        let key = jsonwebtoken::DecodingKey::from_jwk(set.find(&kid_of(&t)).unwrap()).unwrap();
        let mut v = jsonwebtoken::Validation::new(header.alg);
        v.set_audience(&[crate::harness::AUDIENCE]);
        jsonwebtoken::decode::<serde_json::Value>(&t, &key, &v)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        app.stop().await;
        d.cleanup().await;
    }
}
