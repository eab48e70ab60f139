//! More faults in flight (issue 18), each on a private Postgres and Redis:
//! Redis frozen and stopped under `Revoke`, 5,000 revocations committed out
//! of order by concurrent writers, and an issuer killed mid-refresh-burst
//! whose clients retry. Each prints what it measured; the assertions are
//! on outcomes, never on time.

use crate::faults::{outcome, private_deployment};
use crate::harness::{TestApp, eventually};
use deadpool_redis::redis::AsyncCommands;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{IssueRequest, JtiTarget, RefreshRequest, RevokeRequest};
use tonic::Code;

/// `Revoke{jti}` of `prefix-0 … prefix-(n-1)` through `app`, one at a time:
/// the median time to answer, and the jtis.
async fn revoke_burst(app: &TestApp, prefix: &str, n: usize, exp: i64) -> (Duration, Vec<String>) {
    let (mut took, mut jtis) = (Vec::new(), Vec::new());
    for i in 0..n {
        let jti = format!("{prefix}-{i}");
        let asked = Instant::now();
        app.revocation
            .clone()
            .revoke(jti_revocation(&jti, exp))
            .await
            .unwrap();
        took.push(asked.elapsed());
        jtis.push(jti);
    }
    took.sort();
    (took[n / 2], jtis)
}

pub(crate) fn jti_revocation(jti: &str, exp: i64) -> RevokeRequest {
    RevokeRequest {
        target: Some(Target::Jti(JtiTarget {
            jti: jti.into(),
            expires_at: Some(prost_types::Timestamp {
                seconds: exp,
                nanos: 0,
            }),
        })),
        reason: String::new(),
    }
}

/// Waits until Redis at `url` holds the deny-list key of every `jti`.
async fn deny_list_holds(url: &str, prefix: &str, jtis: &[String]) -> Duration {
    let pool = deadpool_redis::Config::from_url(url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    eventually("every revoked jti has its deny-list key", || {
        let pool = pool.clone();
        async move {
            let Ok(mut c) = pool.get().await else {
                return false;
            };
            for jti in jtis {
                let key = format!("{prefix}deny:jti:{jti}");
                if !c.exists::<_, bool>(&key).await.unwrap_or(false) {
                    return false;
                }
            }
            true
        }
    })
    .await
}

/// Redis frozen 20 s (SIGSTOP), then stopped and started again empty:
/// `Revoke` answers on the commit, as fast as with Redis up, and the
/// deny-list keys of the revocations made meanwhile are written once Redis
/// answers (after the restart, every key in force, from the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_frozen_or_stopped_revoke_does_not_wait_and_the_deny_list_is_completed() {
    let (_pg, mut redis, d) = private_deployment().await;
    let app = d.start().await;
    let exp = d.clock_now() + 3600;
    let (up, mut jtis) = revoke_burst(&app, "up", 20, exp).await;
    redis.freeze().unwrap();
    let frozen_at = Instant::now();
    let (frozen, more) = revoke_burst(&app, "frozen", 20, exp).await;
    jtis.extend(more);
    tokio::time::sleep(Duration::from_secs(20).saturating_sub(frozen_at.elapsed())).await;
    redis.thaw().unwrap();
    let thawed = deny_list_holds(&redis.url(), &d.redis_prefix, &jtis).await;
    redis.stop();
    let (down, more) = revoke_burst(&app, "down", 20, exp).await;
    jtis.extend(more);
    redis.resume().unwrap();
    let resumed = deny_list_holds(&redis.url(), &d.redis_prefix, &jtis).await;
    println!(
        "Revoke p50: Redis up {up:?}, frozen {frozen:?}, stopped {down:?}; deny-list complete {thawed:?} after the thaw, {resumed:?} after an empty restart ({} keys)",
        jtis.len()
    );
    app.stop().await;
    d.cleanup().await;
}

/// 5,000 jti revocations from 16 concurrent writers on one instance, so
/// their ids commit out of order: a watcher on another instance, streaming
/// from before the first, receives every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_revocations_committed_out_of_order_all_arrive() {
    const WRITERS: usize = 16;
    const EACH: usize = 5000 / WRITERS + 1;
    let (_pg, _redis, d) = private_deployment().await;
    let a = d.start().await;
    let b = d.start().await;
    let mut watcher = b.watch_revocations().await;
    let exp = d.clock_now() + 3600;
    let started = Instant::now();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let mut r = a.revocation.clone();
            tokio::spawn(async move {
                for i in 0..EACH {
                    r.revoke(jti_revocation(&format!("bulk-{w}-{i}"), exp))
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    let mut expected: BTreeSet<String> = (0..WRITERS)
        .flat_map(|w| (0..EACH).map(move |i| format!("bulk-{w}-{i}")))
        .collect();
    let total = expected.len();
    let (mut last_id, mut out_of_order) = (0, 0);
    let all = tokio::time::timeout(Duration::from_secs(120), async {
        while !expected.is_empty() {
            let Some(e) = watcher.message().await.unwrap() else {
                return false;
            };
            out_of_order += usize::from(e.id < last_id);
            last_id = last_id.max(e.id);
            expected.remove(&e.jti);
        }
        true
    })
    .await;
    for w in writers {
        w.await.unwrap();
    }
    println!(
        "{total} revocations from {WRITERS} writers: the watcher had them all after {:?} ({out_of_order} arrived below a higher id); {} missing",
        started.elapsed(),
        expected.len()
    );
    assert_eq!(all, Ok(true), "missing: {} of {total}", expected.len());
    drop(watcher);
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

/// The issuer (the real binary) SIGKILLed while 20 clients refresh their
/// sessions in a loop, then started again: each client retries the Refresh
/// whose answer it lost, and gets a successor (the grace window covers a
/// refresh that committed before the kill): no session is lost to a false
/// reuse verdict, and every session refreshes on afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_killed_mid_refresh_burst_loses_no_session_to_retries() {
    let (_pg, _redis, d) = private_deployment().await;
    let (mut child, url) = crate::binary::serve(&d);
    let client = IssuerServiceClient::connect(url).await.unwrap();
    let mut sessions = Vec::new();
    for i in 0..20 {
        let issued = client
            .clone()
            .issue(IssueRequest {
                subject: format!("burst-{i}"),
                audience: "api".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        sessions.push(issued.refresh_token);
    }
    let refresh = |mut c: IssuerServiceClient<tonic::transport::Channel>, token: String| async move {
        c.refresh(RefreshRequest {
            refresh_token: token,
            scopes: vec![],
        })
        .await
        .map(|r| r.into_inner().refresh_token)
    };
    // Each client refreshes until a call fails; that call's token is in doubt.
    let bursts: Vec<_> = sessions
        .into_iter()
        .map(|mut token| {
            let c = client.clone();
            tokio::spawn(async move {
                let mut done = 0;
                loop {
                    match refresh(c.clone(), token.clone()).await {
                        Ok(next) => (token, done) = (next, done + 1),
                        Err(e) => return (token, done, e),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let (mut restarted, url) = crate::binary::serve(&d);
    let client = IssuerServiceClient::connect(url).await.unwrap();
    let (mut refreshed, mut lost, mut cut) = (0, Vec::new(), BTreeSet::new());
    for b in bursts {
        let (token, done, e) = b.await.unwrap();
        refreshed += done;
        cut.insert(outcome(&e));
        // The retry of the call in doubt, then one more refresh.
        let retried = refresh(client.clone(), token).await;
        let after = match retried {
            Ok(next) => refresh(client.clone(), next).await,
            Err(e) => Err(e),
        };
        if let Err(e) = after {
            assert_ne!(e.code(), Code::Unavailable, "the restarted issuer serves");
            lost.push(outcome(&e));
        }
    }
    println!(
        "issuer SIGKILLed mid-burst: {refreshed} refreshes before the kill, calls cut with {cut:?}; after the retries, {} of 20 sessions lost {lost:?}",
        lost.len()
    );
    assert!(lost.is_empty(), "sessions lost to retries: {lost:?}");
    restarted.kill().unwrap();
    restarted.wait().unwrap();
    d.cleanup().await;
}

/// Two issuers and three verifiers (one following the first issuer, two
/// the second), Redis stopped; the signing key killed on the first issuer. Its replacement is
/// the standby every verifier already holds, so no token it signs fails
/// anywhere, not even before the kill's notification arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_kill_with_redis_down_fails_no_fresh_token() {
    use tessera::Role;
    use tessera_proto::v1::CompromiseKeyRequest;
    let (_pg, mut redis, d) = private_deployment().await;
    let port = crate::harness::free_port();
    let issuer = |d: &crate::harness::Deployment| {
        let mut cfg = d.config();
        cfg.role = Role::Issuer;
        cfg.revocation_endpoint = Some(format!("http://127.0.0.1:{port}"));
        cfg
    };
    let mut a = crate::harness::start_config(issuer(&d)).await;
    // The second issuer applies its schedule only hourly: with Redis down,
    // nothing tells it of the kill soon (production ticks every 5 s).
    let mut slow = issuer(&d);
    slow.key_tick = Duration::from_secs(3600);
    let b = crate::harness::start_config(slow).await;
    let mut verifiers = Vec::new();
    for i in 0..3 {
        let mut cfg = d.config();
        cfg.role = Role::Introspection;
        // The first is the issuers' revocation service and follows the
        // first issuer; the other two follow the second, which nothing
        // tells of the kill (Redis down, its schedule hourly).
        let follows = if i == 0 {
            cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
            a.0.addr
        } else {
            b.0.addr
        };
        cfg.issuer_endpoint = Some(format!("http://{follows}"));
        verifiers.push(crate::harness::start_config(cfg).await);
    }
    let before = a.0.issue("kill").await.access_token;
    let killed = crate::harness::kid_of(&before);
    // Someone sprays unknown kids: each verifier spends its refetch budget
    // (one key-set refetch per 10 s), so a key it does not hold yet cannot
    // be fetched on demand for a while.
    let header = serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": "sprayed"});
    let payload = before.split('.').nth(1).unwrap();
    let forged = format!(
        "{}.{payload}.AAAA",
        tessera_domain::b64url_encode(header.to_string())
    );
    for (v, _, _) in &verifiers {
        let mut c = v.introspection.clone();
        assert!(crate::harness::verify_token(&mut c, &forged).await.is_err());
    }
    redis.stop();
    let r =
        a.0.keys
            .clone()
            .compromise_key(CompromiseKeyRequest {
                kid: killed.clone(),
                reason: "test".into(),
            })
            .await
            .unwrap()
            .into_inner();
    let replacement = r.new_active_key.expect("a key signs at once").kid;
    let (mut fresh, mut failed) = (0, Vec::new());
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        for issuer in [&a.0, &b.0] {
            let t = crate::harness::issue_token(&mut issuer.issuer.clone(), "kill").await;
            if crate::harness::kid_of(&t) != replacement {
                continue; // B still signs with the killed key until it learns
            }
            fresh += 1;
            for (i, (v, _, _)) in verifiers.iter().enumerate() {
                let mut c = v.introspection.clone();
                if let Err(e) = crate::harness::verify_token(&mut c, &t).await {
                    failed.push(format!("verifier {i}: {e:?}"));
                }
            }
        }
    }
    println!(
        "key kill, 2 issuers x 3 verifiers, Redis down: {fresh} fresh tokens x 3 verifications, {} failed {failed:?}",
        failed.len()
    );
    assert!(fresh > 0);
    assert!(failed.is_empty(), "{failed:?}");
    for (app, stop, done) in verifiers.into_iter().chain([a, b]) {
        drop(app);
        let _ = stop.send(());
        done.await.unwrap().unwrap();
    }
    d.cleanup().await;
}

/// A Refresh whose answer was lost stays queued on one instance (its
/// family row held) while the client retries on another, gets the
/// successor and refreshes on: the queued copies, still waiting to begin
/// when their deadline passed, are abandoned rather than run late against
/// a chain that has moved on — no reuse verdict, no session lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_refresh_never_lands_after_the_retry_moved_on() {
    let (_pg, _redis, d) = private_deployment().await;
    let start = || {
        let mut cfg = d.config();
        // Waits as long as the test holds the row.
        cfg.store_timeouts.statement = Duration::from_secs(60);
        cfg.store_timeouts.lock = Duration::from_secs(50);
        crate::harness::start_config(cfg)
    };
    let (mut a, a_stop, a_done) = start().await;
    let (mut b, b_stop, b_done) = start().await;
    let t0 = a.issue("queued").await;
    let mut locker = <sqlx::PgConnection as sqlx::Connection>::connect(&d.store_url())
        .await
        .unwrap();
    let mut lock = sqlx::Connection::begin(&mut locker).await.unwrap();
    sqlx::query("SELECT 1 FROM families WHERE family_id = $1 FOR UPDATE")
        .bind(&t0.family_id)
        .execute(&mut *lock)
        .await
        .unwrap();
    // Four tries on A, each cut at 200 ms: outcome unknown.
    for _ in 0..4 {
        let mut r = tonic::Request::new(RefreshRequest {
            refresh_token: t0.refresh_token.clone(),
            scopes: vec![],
        });
        r.set_timeout(Duration::from_millis(200));
        let e = a.issuer.clone().refresh(r).await.unwrap_err();
        assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    }
    // The retry on B, then the row released.
    let retry = {
        let mut issuer = b.issuer.clone();
        let token = t0.refresh_token.clone();
        tokio::spawn(async move {
            issuer
                .refresh(RefreshRequest {
                    refresh_token: token,
                    scopes: vec![],
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    lock.rollback().await.unwrap();
    let t1 = retry.await.unwrap().unwrap().into_inner();
    let t2 = b.refresh(&t1.refresh_token).await.unwrap();
    // Whatever was queued on A has had time to act.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t3 = b.refresh(&t2.refresh_token).await;
    let revoked = d
        .count(
            "SELECT COUNT(*) FROM families WHERE family_id = $1 AND revoked_at IS NOT NULL",
            &t0.family_id,
        )
        .await;
    println!(
        "abandoned refreshes: the chain went on ({:?}), family revoked: {revoked}",
        t3.as_ref().map(|_| "OK").map_err(outcome)
    );
    assert!(t3.is_ok(), "the session survives: {t3:?}");
    assert_eq!(revoked, 0);
    assert!(
        a.refresh(&t3.unwrap().refresh_token).await.is_ok(),
        "and on A too"
    );
    for (stop, done) in [(a_stop, a_done), (b_stop, b_done)] {
        let _ = stop.send(());
        done.await.unwrap().unwrap();
    }
    d.cleanup().await;
}
