//! What only the Postgres + Redis deployment does: several instances share
//! keys and revocations; Redis carries revocations with a TTL'd deny-list;
//! Postgres is the truth.

use crate::harness::{
    Backend, Deployment, OwnPostgres, OwnRedis, SilentProxy, eventually, redis_url, verify_token,
};
use deadpool_redis::redis::AsyncCommands;
use std::time::Duration;
use tessera_proto::v1::introspection_service_client::IntrospectionServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{RevokeRequest, VerifyFailure};

async fn redis() -> deadpool_redis::Connection {
    deadpool_redis::Config::from_url(redis_url())
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap()
        .get()
        .await
        .expect("Redis is not reachable; run scripts/test.sh, which starts it")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_instance_reaches_another() {
    let d = Deployment::new(Backend::Distributed).await;
    let mut a = d.start().await;
    let mut b = d.start().await;
    let issued = a.issue("user-x").await;
    assert_eq!(
        b.verify(&issued.access_token).await,
        Ok(()),
        "keys are shared"
    );
    a.revocation
        .revoke(RevokeRequest {
            target: Some(Target::Token(issued.access_token.clone())),
            reason: String::new(),
        })
        .await
        .unwrap();
    // B learns through Redis pub/sub, with no store read on its Verify path.
    let took = revoked_on(&b, &issued.access_token, "B rejects the revoked token").await;
    println!("revocation reached instance B in {took:?}");
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deny_list_entry_expires_with_the_token_and_postgres_is_the_truth() {
    let d = Deployment::new(Backend::Distributed).await;
    let mut app = d.start().await;
    let issued = app.issue("user-y").await;
    let session = app.issue("user-y").await;
    assert_eq!(
        app.revoke(Target::FamilyId(session.family_id.clone()))
            .await,
        1
    );
    let jti = issued.access_token_id.clone();
    app.revocation
        .revoke(RevokeRequest {
            target: Some(Target::Token(issued.access_token.clone())),
            reason: String::new(),
        })
        .await
        .unwrap();

    let mut r = redis().await;
    let key = format!("{}deny:jti:{jti}", d.redis_prefix);
    let ttl_ms: i64 = r.pttl(&key).await.unwrap();
    let want = (15 * 60 + 30) * 1000;
    assert!(
        (want - 5_000..=want).contains(&ttl_ms),
        "deny-list TTL {ttl_ms} ms, want about {want} ms"
    );

    let mut pg =
        <sqlx::PgConnection as sqlx::Connection>::connect(d.database_url.as_ref().unwrap())
            .await
            .unwrap();
    let (exp,): (i64,) = sqlx::query_as("SELECT expires_at FROM revoked_tokens WHERE jti = $1")
        .bind(&jti)
        .fetch_one(&mut pg)
        .await
        .unwrap();
    assert_eq!(exp, issued.access_token_expires_at.unwrap().seconds + 30);

    // Deleting every Redis key of the deployment by hand does not resurrect
    // anything: a new instance rebuilds its view from Postgres, and STRONG
    // reads Postgres.
    let keys: Vec<String> = r.keys(format!("{}*", d.redis_prefix)).await.unwrap();
    assert!(keys.contains(&key));
    let _: i64 = r.del(&keys).await.unwrap();
    app.stop().await;
    let mut again = d.start().await;
    for t in [&issued.access_token, &session.access_token] {
        assert_eq!(again.verify(t).await, Err(VerifyFailure::Revoked));
        assert_eq!(again.verify_strong(t).await, Err(VerifyFailure::Revoked));
    }
    assert!(again.refresh(&session.refresh_token).await.is_err());
    again.stop().await;
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_refresh_token_is_revoked_on_every_instance() {
    let d = Deployment::new(Backend::Distributed).await;
    let mut a = d.start().await;
    let mut b = d.start().await;
    let t0 = a.issue("user-z").await;
    let s1 = b.refresh(&t0.refresh_token).await.unwrap();
    assert_eq!(a.verify(&s1.access_token).await, Ok(()));
    d.clock.advance(60);
    // The reuse is caught on A; B's view hears of it through Redis.
    let err = a.refresh(&t0.refresh_token).await.unwrap_err();
    assert_eq!(
        crate::harness::reason(&err),
        "ERROR_REASON_REFRESH_TOKEN_REUSED"
    );
    revoked_on(&b, &s1.access_token, "B rejects the reused family's token").await;
    assert!(b.refresh(&s1.refresh_token).await.is_err());
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_the_store_and_errors_stay_clean() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let d = Deployment::new(Backend::Distributed).await;
    let mut app = d.start().await;
    let issued = app.issue("store-down").await;
    let health = HealthClient::new(app.channel.clone());
    let status_of = |service: &'static str| {
        let mut h = health.clone();
        async move {
            h.check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .map_or(ServingStatus::Unknown, |r| r.into_inner().status())
        }
    };
    let status = || status_of("");
    let wait_for = |want: ServingStatus| async move {
        eventually(&format!("health {want:?}"), || async move {
            status().await == want
        })
        .await;
    };
    let verify_health = |want: ServingStatus| async move {
        eventually(&format!("IntrospectionService {want:?}"), || async move {
            status_of("tessera.v1.IntrospectionService").await == want
        })
        .await;
    };
    wait_for(ServingStatus::Serving).await;
    // The HTTP probes read the same check as gRPC health.
    let addr = app.addr;
    let readyz = |query: &'static str| async move {
        let (status, _, body) =
            crate::harness::http_get(addr, &format!("/readyz{query}"), "").await;
        (
            status,
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        )
    };
    assert_eq!(readyz("").await.0, 200);

    // Take the database away: no new connections, existing ones killed.
    d.allow_connections(false).await;
    wait_for(ServingStatus::NotServing).await;
    let (status, body) = readyz("").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body["reasons"],
        serde_json::json!(["the store does not answer"])
    );
    assert_eq!(body["services"]["tessera.v1.IssuerService"], "NOT_SERVING");
    assert_eq!(
        body["services"]["tessera.v1.IntrospectionService"],
        "SERVING"
    );
    // A balancer in front of verifiers only can ask about Verify alone.
    assert_eq!(
        readyz("?service=tessera.v1.IntrospectionService").await.0,
        200
    );
    assert_eq!(app.http_get("/livez", "").await.0, 200, "alive all along");

    // Calls that need the store fail UNAVAILABLE, fast, with a clean message.
    let asked = std::time::Instant::now();
    let err = app.try_issue("x").await.unwrap_err();
    println!(
        "Postgres down: Issue answered UNAVAILABLE after {:?}",
        asked.elapsed()
    );
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert_eq!(
        crate::harness::reason(&err),
        "ERROR_REASON_STORE_UNAVAILABLE"
    );
    for leak in [
        "SELECT",
        "INSERT",
        "postgres",
        d.database_name.as_deref().unwrap(),
    ] {
        assert!(!err.message().contains(leak), "{}", err.message());
    }
    // Verify with DEFAULT consistency needs no store and keeps answering,
    // and its service stays SERVING while the view is fresh...
    assert_eq!(app.verify(&issued.access_token).await, Ok(()));
    assert_eq!(
        status_of("tessera.v1.IntrospectionService").await,
        ServingStatus::Serving
    );
    assert_eq!(
        status_of("tessera.v1.IssuerService").await,
        ServingStatus::NotServing
    );
    // ...until the view is older than --max-view-staleness (30 s here).
    d.clock.advance(31);
    verify_health(ServingStatus::NotServing).await;
    let (status, body) = readyz("?service=tessera.v1.IntrospectionService").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reasons"]
            .as_array()
            .unwrap()
            .contains(&"the revocation view is older than --max-view-staleness".into()),
        "{body}"
    );

    d.allow_connections(true).await;
    wait_for(ServingStatus::Serving).await;
    verify_health(ServingStatus::Serving).await;
    eventually("/readyz answers 200 again", || async {
        readyz("").await.0 == 200
    })
    .await;
    assert!(app.refresh(&issued.refresh_token).await.is_ok());
    app.stop().await;
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_see_every_instances_revocations() {
    let d = Deployment::new(Backend::Distributed).await;
    let mut a = d.start().await;
    let b = d.start().await;
    let mut events = b.watch_revocations().await;
    let issued = a.issue("watched").await;
    a.revoke(Target::Token(issued.access_token.clone())).await;
    a.revoke(Target::Subject("watched".into())).await;
    let jti = next_event(&mut events).await;
    assert_eq!(jti.jti, issued.access_token_id);
    assert_eq!(
        jti.revoked_until.unwrap().seconds,
        issued.access_token_expires_at.unwrap().seconds + 30
    );
    let subject = next_event(&mut events).await;
    assert_eq!(subject.subject, "watched");
    assert_eq!(subject.min_subject_version, 1);
    a.stop().await;
    b.stop().await;
    let end = events.message().await;
    assert!(
        matches!(end, Ok(None) | Err(_)),
        "the stream ends with the server"
    );
    d.cleanup().await;
}

async fn next_event(
    events: &mut tonic::Streaming<tessera_proto::v1::WatchRevocationsResponse>,
) -> tessera_proto::v1::WatchRevocationsResponse {
    tokio::time::timeout(Duration::from_secs(5), events.message())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_database_is_refused_with_the_fix_named() {
    let d = Deployment::new(Backend::Distributed).await;
    let mut cfg = d.config();
    cfg.migrate = false;
    let err = tessera::Application::build(cfg.clone()).await.unwrap_err();
    assert!(err.to_string().contains("tessera migrate"), "{err}");
    // The URL is named, without its password.
    let (err, url) = (err.to_string(), cfg.database_url.clone().unwrap());
    assert!(
        err.contains(&format!(
            "database_url {}",
            tessera_storage::redact_url(&url)
        )),
        "{err}"
    );
    let password = url
        .split("://")
        .nth(1)
        .and_then(|r| r.rsplit_once('@'))
        .and_then(|(info, _)| info.split_once(':'))
        .map(|(_, p)| p.to_owned());
    if let Some(p) = password {
        assert!(!err.contains(&p), "no password in errors: {err}");
    }
    // The fix, with the real binary.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "migrate",
            "--database-url",
            d.database_url.as_deref().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = tessera::Application::build(cfg).await.unwrap();
    drop(app);
    d.cleanup().await;
}

/// Redis stopped: a revocation is acknowledged once durable, and every
/// verifier still rejects the token within the reconcile interval (here
/// 200 ms), pulling it from Postgres; with Redis back, the fast path resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_stopped_revocations_still_reach_every_verifier() {
    let mut redis = OwnRedis::start().unwrap();
    let mut d = Deployment::new(Backend::Distributed).await;
    d.redis_url = redis.url();
    let mut a = d.start().await;
    let mut b = d.start().await;
    let t1 = a.issue("ray").await;
    let t2 = a.issue("ray2").await;
    assert_eq!(b.verify(&t1.access_token).await, Ok(()));
    assert_eq!(b.verify(&t2.access_token).await, Ok(()));

    redis.stop();
    // Acknowledged: the revocation is durable, the fan-out is not needed.
    assert_eq!(a.revoke(Target::Token(t1.access_token.clone())).await, 1);
    let took = revoked_on(&b, &t1.access_token, "B rejects the token revoked on A").await;
    println!("Redis stopped: a revocation on A reached B through the store in {took:?}");
    // A family revoked by reuse detection inside a refresh transaction,
    // with no notification reaching anyone but the store.
    let next = a.refresh(&t2.refresh_token).await.unwrap();
    d.clock.advance(60);
    assert!(a.refresh(&t2.refresh_token).await.is_err(), "reuse");
    let took = revoked_on(
        &b,
        &next.access_token,
        "B rejects the reused family's token",
    )
    .await;
    println!("Redis stopped: a reuse on A reached B through the store in {took:?}");

    redis.resume().unwrap();
    let t3 = a.issue("ray3").await;
    assert_eq!(a.revoke(Target::Token(t3.access_token.clone())).await, 1);
    revoked_on(&b, &t3.access_token, "B rejects again with Redis back").await;
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

/// How long until `app` answers REVOKED for `token`.
async fn revoked_on(app: &crate::harness::TestApp, token: &str, what: &str) -> std::time::Duration {
    eventually(what, || {
        let mut i = app.introspection.clone();
        let t = token.to_owned();
        async move { verify_token(&mut i, &t).await == Err(VerifyFailure::Revoked) }
    })
    .await
}

/// A shared deployment cannot start half-configured: without an explicit
/// issuer, without a supplied KEK, or with a KEK that cannot open the stored
/// keys, each refusal naming the setting and the fix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_deployment_cannot_start_half_configured() {
    use tessera::kek::KekSource;
    let d = Deployment::new(Backend::Distributed).await;
    let refused = |cfg: tessera::Config| async move {
        tessera::Application::build(cfg)
            .await
            .unwrap_err()
            .to_string()
    };
    let mut cfg = d.config();
    cfg.issuer_set = false;
    let e = refused(cfg).await;
    assert!(
        e.contains("issuer: required") && e.contains("--issuer"),
        "{e}"
    );
    let mut cfg = d.config();
    cfg.kek = KekSource::DataDir;
    let e = refused(cfg).await;
    assert!(
        e.contains("kek: required") && e.contains("TESSERA_KEK"),
        "{e}"
    );
    // The deployment's keys exist; another KEK cannot open them.
    let app = d.start().await;
    app.stop().await;
    let mut cfg = d.config();
    cfg.kek = KekSource::Value(tessera_domain::Secret::new(vec![7; 32]));
    let e = refused(cfg).await;
    assert!(e.contains("sealed under KEK id"), "{e}");
    assert!(!e.contains("postgres://"), "no URL in errors: {e}");
    d.cleanup().await;
}

/// A verifier whose Redis connection went silent (a proxy that stops
/// forwarding without closing): revocations still reach it through the
/// store within the reconcile interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_redis_connection_delays_nothing_past_the_reconcile() {
    let d = Deployment::new(Backend::Distributed).await;
    let proxy = SilentProxy::start(d.redis_url.trim_start_matches("redis://").to_owned()).await;
    let mut a = d.start().await;
    let mut cfg = d.config();
    cfg.redis_url = Some(proxy.url());
    let (b, b_stop, b_done) = crate::harness::start_config(cfg).await;
    let t = a.issue("sil").await;
    assert_eq!(
        verify_token(&mut b.introspection.clone(), &t.access_token).await,
        Ok(())
    );
    proxy.freeze();
    assert_eq!(a.revoke(Target::Token(t.access_token.clone())).await, 1);
    let took = revoked_on(&b, &t.access_token, "B rejects through the store").await;
    println!("silent Redis connection: a revocation on A reached B in {took:?}");
    let _ = b_stop.send(());
    b_done.await.unwrap().unwrap();
    a.stop().await;
    d.cleanup().await;
}

/// Redis frozen (SIGSTOP) and resumed: `Revoke` still answers (its fan-out
/// gives up after 1 s), every verifier rejects through the store, and after
/// SIGCONT the fast path serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_frozen_revoke_answers_and_verifiers_catch_up() {
    let redis = OwnRedis::start().unwrap();
    let mut d = Deployment::new(Backend::Distributed).await;
    d.redis_url = redis.url();
    let mut a = d.start().await;
    let b = d.start().await;
    let (t1, t2) = (a.issue("ice").await, a.issue("ice2").await);
    redis.freeze().unwrap();
    let asked = std::time::Instant::now();
    assert_eq!(a.revoke(Target::Token(t1.access_token.clone())).await, 1);
    println!("Redis frozen: Revoke answered after {:?}", asked.elapsed());
    let took = revoked_on(&b, &t1.access_token, "B rejects with Redis frozen").await;
    println!("Redis frozen: a revocation on A reached B in {took:?}");
    redis.thaw().unwrap();
    assert_eq!(a.revoke(Target::Token(t2.access_token.clone())).await, 1);
    revoked_on(&b, &t2.access_token, "B rejects after Redis resumed").await;
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

/// Postgres stopped (the test's own cluster, `pg_ctl -m immediate`) and
/// started again: calls that need it answer UNAVAILABLE fast, Verify keeps
/// answering from memory, a revocation acknowledged before the stop is still
/// in force after it, and everything recovers without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_stopped_answers_stay_honest_and_recover() {
    let pg = OwnPostgres::start();
    let d = Deployment::new_on(Backend::Distributed, &pg.admin_url()).await;
    let mut app = d.start().await;
    let (kept, live) = (app.issue("pg").await, app.issue("pg2").await);
    assert_eq!(
        app.revoke(Target::Token(kept.access_token.clone())).await,
        1
    );

    pg.stop();
    let asked = std::time::Instant::now();
    let err = app.try_issue("x").await.unwrap_err();
    println!(
        "Postgres stopped: Issue answered {:?} after {:?}",
        err.code(),
        asked.elapsed()
    );
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let asked = std::time::Instant::now();
    let err = app
        .revocation
        .revoke(RevokeRequest {
            target: Some(Target::Token(live.access_token.clone())),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    println!(
        "Postgres stopped: Revoke answered {:?} after {:?}",
        err.code(),
        asked.elapsed()
    );
    assert_eq!(err.code(), tonic::Code::Unavailable, "no false success");
    assert!(app.refresh(&live.refresh_token).await.is_err());
    // Verify answers from memory: the revoked token stays revoked, the live
    // one (whose revocation failed) stays valid.
    assert_eq!(
        app.verify(&kept.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert_eq!(app.verify(&live.access_token).await, Ok(()));

    pg.resume();
    eventually("Issue works again", || async {
        app.try_issue("y").await.is_ok()
    })
    .await;
    assert_eq!(
        app.verify_strong(&kept.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert!(app.refresh(&live.refresh_token).await.is_ok());
    app.stop().await;
    d.cleanup().await;
}

/// A verifier — the real binary — killed with SIGKILL while another
/// instance keeps revoking, and started again: it rejects every token
/// revoked so far from its first answer, because a view is filled from the
/// store before it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifier_killed_and_restarted_rejects_every_revoked_token_at_once() {
    let d = Deployment::new(Backend::Distributed).await;
    let a = d.start().await;
    let mut tokens = Vec::new();
    for i in 0..100 {
        tokens.push(a.try_issue(&format!("k{i}")).await.unwrap().access_token);
    }
    let (mut b, b_url) = crate::binary::serve(&d);
    // It serves before the kill.
    let mut b_client = IntrospectionServiceClient::connect(b_url).await.unwrap();
    assert_eq!(verify_token(&mut b_client, &tokens[0]).await, Ok(()));
    // Revocations run on A throughout.
    let revoking = {
        let mut r = a.revocation.clone();
        let tokens = tokens.clone();
        tokio::spawn(async move {
            for t in tokens {
                r.revoke(RevokeRequest {
                    target: Some(Target::Token(t)),
                    reason: String::new(),
                })
                .await
                .unwrap();
                // Paced, so that revocations are still landing while the
                // verifier is down and while it starts again.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        })
    };
    // Kill it once some revocations have landed and more are coming.
    eventually("some revocations land before the kill", || async {
        d.count("SELECT COUNT(*) FROM revoked_tokens WHERE jti LIKE $1", "%")
            .await
            >= 5
    })
    .await;
    b.kill().unwrap(); // SIGKILL: no graceful shutdown, nothing flushed
    b.wait().unwrap();
    // Every revocation acknowledged before the restart, as the store knows it.
    let before: Vec<String> = {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&d.store_url())
            .await
            .unwrap();
        sqlx::query_scalar("SELECT jti FROM revoked_tokens")
            .fetch_all(&mut conn)
            .await
            .unwrap()
    };
    let (mut b2, b2_url) = crate::binary::serve(&d);
    let mut b2_client = IntrospectionServiceClient::connect(b2_url).await.unwrap();
    let mut first_answers = Vec::new();
    for t in &tokens {
        first_answers.push(verify_token(&mut b2_client, t).await);
    }
    let jti_of = |t: &str| {
        crate::harness::decode_payload(t)["jti"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (t, answer) in tokens.iter().zip(&first_answers) {
        if before.contains(&jti_of(t)) {
            assert_eq!(
                *answer,
                Err(VerifyFailure::Revoked),
                "revoked before the restart"
            );
        }
    }
    println!(
        "restarted verifier: {} of {} tokens revoked before it started, all rejected at its first answers",
        before.len(),
        tokens.len()
    );
    revoking.await.unwrap();
    for t in &tokens {
        let (c, t) = (b2_client.clone(), t.clone());
        eventually("the restarted verifier rejects every revoked token", || {
            let (mut c, t) = (c.clone(), t.clone());
            async move { verify_token(&mut c, &t).await == Err(VerifyFailure::Revoked) }
        })
        .await;
    }
    b2.kill().unwrap();
    b2.wait().unwrap();
    a.stop().await;
    d.cleanup().await;
}

/// A watcher whose connection drops mid-stream resumes with `after_id` and
/// misses nothing revoked meanwhile, in log order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_reconnects_misses_nothing() {
    use tessera_proto::v1::WatchRevocationsRequest;
    let d = Deployment::new(Backend::Distributed).await;
    let mut a = d.start().await;
    let b = d.start().await;
    let mut events = b.watch_revocations().await;
    let mut subjects = (0..6).map(|i| format!("w{i}"));
    for s in subjects.by_ref().take(2) {
        a.revoke(Target::Subject(s)).await;
    }
    let first = next_event(&mut events).await;
    let second = next_event(&mut events).await;
    assert_eq!(
        (first.subject.as_str(), second.subject.as_str()),
        ("w0", "w1")
    );
    assert!(second.id > first.id);
    drop(events); // the connection drops mid-stream
    for s in subjects.by_ref() {
        a.revoke(Target::Subject(s)).await;
    }
    let mut resumed = b
        .revocation
        .clone()
        .watch_revocations(WatchRevocationsRequest {
            after_id: second.id,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_event(&mut resumed).await.subject);
    }
    assert_eq!(seen, ["w2", "w3", "w4", "w5"], "nothing missed, in order");
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}
