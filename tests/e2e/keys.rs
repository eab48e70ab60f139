//! Signing keys: the rotation cycle on an injected clock, rotation and
//! compromise under Verify load, exactly-once rotation across instances, the
//! HTTP JWKS, and refusal of unsafe schedules.

use crate::harness::{
    Backend, Deployment, TestApp, eventually, issue_token, kid_of, on_both_backends, reason,
    verify_token,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tessera_domain::schedule::KeySchedule;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    GetJwksRequest, KeyState, ListKeysRequest, RetireKeyRequest, RotateKeysRequest,
};
use tonic::Code;

on_both_backends!(current_thread: a_kill_cancelled_retried_or_raced_is_recorded_once);

on_both_backends!(
    a_whole_rotation_cycle_on_the_injected_clock,
    rotation_under_verify_load_fails_nothing,
    an_idle_instance_takes_the_key_lock_only_when_a_step_is_due,
    revoke_by_kid_kills_the_key_through_the_key_manager,
);

pub(crate) async fn states(app: &mut TestApp) -> Vec<(String, KeyState)> {
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

pub(crate) async fn jwks_kids(app: &mut TestApp) -> Vec<String> {
    published_kids(&mut app.keys).await
}

/// The kids of the published set, sorted.
async fn published_kids(
    client: &mut tessera_proto::v1::key_service_client::KeyServiceClient<tonic::transport::Channel>,
) -> Vec<String> {
    let mut kids: Vec<String> = client
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
    // From the start a standby is published behind the signing key.
    let standby = states(&mut app)
        .await
        .into_iter()
        .find(|(_, st)| *st == KeyState::Pending)
        .expect("a standby key is published from the start")
        .0;
    let mut both = vec![k1.clone(), standby.clone()];
    both.sort();
    assert_eq!(jwks_kids(&mut app).await, both);

    // On demand: the standby is brought forward; it signs once published
    // for publish_ahead.
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
    assert_eq!(k2, standby, "the standby is the next key");
    assert_eq!(
        changed[0].activates_at.unwrap().seconds,
        d.clock_now() + s.publish_ahead
    );
    assert_eq!(jwks_kids(&mut app).await, both, "published before it signs");

    // One second early: still the old key after a tick.
    d.clock.advance(s.publish_ahead - 1);
    app.tick().await;
    let t1 = app.issue("kim").await.access_token;
    assert_eq!(kid_of(&t1), k1);
    // On time: the new key signs, the old one still verifies.
    d.clock.advance(1);
    eventually("the new key signs", || {
        let mut issuer = app.issuer.clone();
        let k2 = k2.clone();
        async move {
            let t = issue_token(&mut issuer, "kim").await;
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

    // One second before retire_after the old key is still published...
    d.clock.advance(s.retire_after - 1);
    app.tick().await;
    assert!(jwks_kids(&mut app).await.contains(&k1), "unpublished early");
    // ...and on time it leaves the JWKS by itself.
    d.clock.advance(1);
    eventually("the old key is unpublished", || {
        let mut keys = app.keys.clone();
        let k2 = k2.clone();
        let k1 = k1.clone();
        async move {
            let kids = published_kids(&mut keys).await;
            kids.contains(&k2) && !kids.contains(&k1)
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
    let published = jwks["keys"].as_array().unwrap();
    assert!(published.iter().any(|k| k["kid"] == k2.as_str()), "{jwks}");
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
pub(crate) fn verify_load(
    app: &TestApp,
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let mut issuer = app.issuer.clone();
    let mut introspection = app.introspection.clone();
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let t = issue_token(&mut issuer, "load").await;
            for _ in 0..20 {
                let r = verify_token(&mut introspection, &t).await;
                calls.fetch_add(1, Ordering::Relaxed);
                if r.is_err() {
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
        async move { calls.load(Ordering::Relaxed) > 200 }
    })
    .await;
    let before = calls.load(Ordering::Relaxed);
    app.keys
        .rotate_keys(RotateKeysRequest::default())
        .await
        .unwrap();
    let published = calls.load(Ordering::Relaxed);
    eventually("the load runs with the next key published", || {
        let calls = calls.clone();
        async move { calls.load(Ordering::Relaxed) > published + 200 }
    })
    .await;
    d.clock.advance(d.keys.publish_ahead);
    eventually("the new key signs", || {
        let mut issuer = app.issuer.clone();
        let old = old.clone();
        async move {
            let t = issue_token(&mut issuer, "load").await;
            kid_of(&t) != kid_of(&old)
        }
    })
    .await;
    let switched = calls.load(Ordering::Relaxed);
    eventually("the load runs on after the switch", || {
        let calls = calls.clone();
        async move { calls.load(Ordering::Relaxed) > switched + 400 }
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

/// The key lock is a row (`leases`) every key change writes. An instance with
/// nothing due must not write it on every tick, or instances queue on it.
async fn an_idle_instance_takes_the_key_lock_only_when_a_step_is_due(backend: Backend) {
    let d = Deployment::new(backend).await;
    let s = d.keys;
    let mut app = d.start().await;
    const LOCKS: &str = "SELECT counter FROM leases WHERE name = $1";
    let before = d.count(LOCKS, "signing_keys").await;
    // Ten ticks with nothing due: no lock taken.
    for _ in 0..10 {
        app.tick().await;
    }
    assert_eq!(
        d.count(LOCKS, "signing_keys").await,
        before,
        "idle ticks wrote the lock row"
    );
    // At the hand-over a tick takes the lock: the standby signs, the old
    // key retires, the next standby is published.
    d.clock.advance(s.rotation_period);
    app.tick().await;
    assert!(d.count(LOCKS, "signing_keys").await > before);
    assert_eq!(published_kids(&mut app.keys).await.len(), 3);
    assert_eq!(states(&mut app).await.len(), 3);
    app.stop().await;
    d.cleanup().await;
}

/// `Revoke{kid}` on the revocation service and `CompromiseKey` on the key
/// service are one path: the key manager kills the key (the next one signs
/// at once), the revocation service fans the kill out.
async fn revoke_by_kid_kills_the_key_through_the_key_manager(backend: Backend) {
    let d = Deployment::new(backend).await;
    let mut app = d.start().await;
    let old = app.issue("kay").await.access_token;
    let kid = kid_of(&old);
    assert_eq!(app.revoke(Target::Kid(kid.clone())).await, 1);
    let st = states(&mut app).await;
    assert!(st.contains(&(kid.clone(), KeyState::Compromised)), "{st:?}");
    assert_eq!(
        st.iter().filter(|(_, s)| *s == KeyState::Active).count(),
        1,
        "{st:?}"
    );
    let new = app.issue("kay").await.access_token;
    assert_ne!(kid_of(&new), kid, "another key signs at once");
    assert!(app.verify(&old).await.is_err());
    assert_eq!(app.verify(&new).await, Ok(()));
    // Again: nothing changes, and the answer says so (0, as for a token
    // or a family revoked already); an unknown kid revokes nothing.
    assert_eq!(app.revoke(Target::Kid(kid)).await, 0);
    assert!(app.verify(&old).await.is_err());
    assert_eq!(states(&mut app).await.len(), st.len());
    assert_eq!(app.revoke(Target::Kid("no-such-kid".into())).await, 0);
    app.stop().await;
    d.cleanup().await;
}

/// `Revoke{kid}` is a write: a client that gives up at once does not cut
/// it in half, and its retry kills nothing twice; two callers killing one
/// key at the same moment kill it once between them (their `revoked`
/// answers sum to 1). Each key gets exactly one `key_compromised` and one
/// `key_revoked` in the audit trail, whatever the interleaving.
async fn a_kill_cancelled_retried_or_raced_is_recorded_once(backend: Backend) {
    use tracing_subscriber::prelude::*;
    let (layer, buffer) = tessera::audit_log::capture();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let d = Deployment::new(backend).await;
    let mut app = d.start().await;
    let kill = |kid: &str| tessera_proto::v1::RevokeRequest {
        target: Some(Target::Kid(kid.to_owned())),
        reason: "edge".into(),
    };

    // Cancelled at once by its client, then retried until answered.
    let cancelled = kid_of(&app.issue("cancel").await.access_token);
    let mut client = app.revocation.clone();
    let gave_up = tokio::time::timeout(
        std::time::Duration::from_millis(1),
        client.revoke(kill(&cancelled)),
    )
    .await;
    let first = gave_up
        .ok()
        .and_then(Result::ok)
        .map(|r| r.into_inner().revoked);
    let retried = app.revoke(Target::Kid(cancelled.clone())).await;
    // Whichever call killed it answered 1, the other 0 (the cancelled
    // one's answer is usually lost; the trail below counts either way).
    if let Some(first) = first {
        assert_eq!(first + retried, 1, "{first} + {retried}");
    }

    // Two callers at once on the signing key.
    let raced = kid_of(&app.issue("race").await.access_token);
    assert_ne!(raced, cancelled, "the kill put another key in its place");
    let (mut a, mut b) = (app.clone_clients(), app.clone_clients());
    let (ra, rb) = tokio::join!(
        a.revoke(Target::Kid(raced.clone())),
        b.revoke(Target::Kid(raced.clone()))
    );
    assert_eq!(
        ra + rb,
        1,
        "one of the racing callers killed it: {ra} + {rb}"
    );

    for kid in [&cancelled, &raced] {
        for event in ["key_compromised", "key_revoked"] {
            let want = serde_json::json!({ "kid": kid });
            eventually(&format!("one {event} for {kid}"), || {
                let n = crate::audit::matching(&crate::audit::events(&buffer), event, &want).len();
                async move { n == 1 }
            })
            .await;
        }
    }
    let st = states(&mut app).await;
    for kid in [&cancelled, &raced] {
        assert!(st.contains(&(kid.clone(), KeyState::Compromised)), "{st:?}");
    }
    let after = app.issue("after").await.access_token;
    assert!(app.verify(&after).await.is_ok());
    app.stop().await;
    d.cleanup().await;
}
