//! Faults in flight (issue 18), each on a private Postgres and Redis: a
//! revocation whose COMMIT lands late, calls cancelled at every step while
//! Postgres is frozen, and a family row held locked. Each prints what it
//! measured (times to answer, codes seen, delivery times); the assertions
//! are on outcomes, never on time.

use crate::harness::{
    Backend, Deployment, OwnPostgres, OwnRedis, TestApp, decode_payload, eventually, reason,
    start_config, verify_token,
};
use sqlx::Connection as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{IssueRequest, RevokeRequest, VerifyFailure};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_committed_late_reaches_every_verifier_redis_up() {
    a_revocation_committed_late_reaches_every_verifier(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_committed_late_reaches_every_verifier_redis_down() {
    a_revocation_committed_late_reaches_every_verifier(false).await;
}

/// Holds the COMMIT of a `revocation_log` insert whose target is listed
/// in `late_targets` until the test releases advisory lock 18 (a stalled
/// disk, a partition: the id is drawn, the row becomes visible much later).
const LATE_TRIGGER: &str = r"
CREATE TABLE late_targets (target TEXT PRIMARY KEY);
CREATE FUNCTION late_commit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM late_targets WHERE target = NEW.target) THEN
        PERFORM pg_advisory_lock(18);
        PERFORM pg_advisory_unlock(18);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER late_commit AFTER INSERT ON revocation_log
    FOR EACH ROW EXECUTE FUNCTION late_commit();
";

/// Three instances; a token revoked by a call whose COMMIT lands seconds
/// after its log id was drawn (when the test lets it), while a later revocation commits first and
/// the skipped id is given up on (the deployment clock is moved past the
/// hole lifetime). The caller is told the outcome is unknown; readiness
/// shows the view behind while the commit is in flight; once it lands,
/// every instance rejects the token, by the log's watermark (counted as
/// late) with Redis down, and by the fan-out too with Redis up.
async fn a_revocation_committed_late_reaches_every_verifier(redis_up: bool) {
    let (_pg, mut redis, d) = private_deployment().await;
    let mut apps = Vec::new();
    for _ in 0..3 {
        let mut cfg = d.config();
        // The trigger's wait is a statement and a lock wait: let it run.
        cfg.store_timeouts.statement = Duration::from_secs(60);
        cfg.store_timeouts.lock = Duration::from_secs(50);
        apps.push(start_config(cfg).await);
    }
    let url = d.database_url.clone().unwrap();
    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(LATE_TRIGGER).execute(&mut db).await.unwrap();
    let late = apps[0].0.issue("late").await;
    let other = apps[0].0.issue("other").await;
    let jti = decode_payload(&late.access_token)["jti"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query("INSERT INTO late_targets VALUES ($1)")
        .bind(&jti)
        .execute(&mut db)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock(18)")
        .execute(&mut db)
        .await
        .unwrap();
    if !redis_up {
        redis.stop();
    }
    // A watcher on another instance, streaming from before the revocation.
    let mut watcher = apps[1].0.watch_revocations().await;
    let mut call = tonic::Request::new(RevokeRequest {
        target: Some(Target::Token(late.access_token.clone())),
        reason: String::new(),
    });
    call.set_timeout(Duration::from_secs(1));
    let asked = Instant::now();
    let err = apps[0].0.revocation.clone().revoke(call).await.unwrap_err();
    println!(
        "late commit (Redis up: {redis_up}): Revoke answered {:?} {} after {:?}",
        err.code(),
        reason(&err),
        asked.elapsed()
    );
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert_eq!(reason(&err), "ERROR_REASON_OUTCOME_UNKNOWN");
    // A later revocation (a higher id) commits first; every view sees it…
    assert_eq!(
        apps[0]
            .0
            .revoke(Target::Token(other.access_token.clone()))
            .await,
        1
    );
    for (app, _, _) in &apps {
        revoked_within(app, &other.access_token).await;
    }
    // …and, past the hole lifetime, stops asking for the skipped id (each
    // reconcile, not only the fan-out, must have seen the later row first:
    // five reconcile intervals).
    tokio::time::sleep(Duration::from_secs(1)).await;
    d.clock
        .advance(tessera_domain::reconcile::HOLE_LIFETIME + 1);
    for (app, _, _) in &apps {
        ready_is(app, false).await;
    }
    // The late transaction commits now.
    sqlx::query("SELECT pg_advisory_unlock(18)")
        .execute(&mut db)
        .await
        .unwrap();
    eventually("the late revocation commits", || {
        let url = url.clone();
        let jti = jti.clone();
        async move {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM revocation_log WHERE target = $1")
                    .bind(&jti)
                    .fetch_one(&mut c)
                    .await
                    .unwrap();
            n == 1
        }
    })
    .await;
    let committed_at = Instant::now();
    for (i, (app, _, _)) in apps.iter().enumerate() {
        revoked_within(app, &late.access_token).await;
        println!(
            "late commit (Redis up: {redis_up}): instance {i} rejects the token {:?} after the commit landed",
            committed_at.elapsed()
        );
    }
    // The watcher gets it too, however late it committed.
    let watched = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = watcher.message().await.unwrap() {
            if e.jti == jti {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        watched,
        Ok(true),
        "the watcher receives the late revocation"
    );
    drop(watcher);
    for (app, _, _) in &apps {
        ready_is(app, true).await;
        let late = eventually("the late row is counted", || async {
            metric(app, "tessera_revocations_late_total").await >= 1.0
        });
        late.await;
    }
    for (app, stop, done) in apps {
        drop(app);
        let _ = stop.send(());
        done.await.unwrap().unwrap();
    }
    d.cleanup().await;
}

/// A deployment on a Postgres and a Redis of its own (so the test may
/// freeze, stop and hold them).
pub(crate) async fn private_deployment() -> (OwnPostgres, OwnRedis, Deployment) {
    let pg = OwnPostgres::start();
    let redis = OwnRedis::start().unwrap();
    let mut d = Deployment::new_on(Backend::Distributed, &pg.admin_url()).await;
    d.redis_url = redis.url();
    (pg, redis, d)
}

/// A refused call's code and reason, for the tallies.
pub(crate) fn outcome(e: &tonic::Status) -> String {
    format!("{:?} {}", e.code(), reason(e))
}

/// Waits until `app` answers REVOKED for `token` on DEFAULT Verify.
async fn revoked_within(app: &TestApp, token: &str) {
    eventually("the instance rejects the revoked token", || {
        let mut i = app.introspection.clone();
        async move { verify_token(&mut i, token).await == Err(VerifyFailure::Revoked) }
    })
    .await;
}

/// Waits until `app`'s overall health is SERVING (`true`) or NOT_SERVING.
async fn ready_is(app: &TestApp, serving: bool) {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let want = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    eventually(&format!("health {want:?}"), || {
        let mut h = HealthClient::new(app.channel.clone());
        async move {
            h.check(HealthCheckRequest::default())
                .await
                .is_ok_and(|r| r.into_inner().status() == want)
        }
    })
    .await;
}

/// One unlabelled series from `GET /metrics` (0 when absent).
async fn metric(app: &TestApp, name: &str) -> f64 {
    let (_, _, body) = app.http_get("/metrics", "").await;
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// What a load worker saw: acknowledged writes, and the codes of the rest.
#[derive(Default)]
struct Seen {
    families: Vec<String>,
    jtis: Vec<String>,
    codes: BTreeMap<String, u64>,
    slowest: Duration,
}

/// One worker: Issue and Revoke{jti} in turn, each with a client deadline
/// from 5 ms to 2 s (so calls are cut at every step), until `stop`.
async fn cancelling_load(app: TestApp, w: usize, exp: i64, stop: Arc<AtomicBool>) -> Seen {
    const DEADLINES_MS: [u64; 6] = [5, 15, 40, 120, 500, 2000];
    let mut seen = Seen::default();
    let mut i = 0usize;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let deadline = Duration::from_millis(DEADLINES_MS[i % DEADLINES_MS.len()]);
        let asked = Instant::now();
        let code = if i.is_multiple_of(2) {
            let mut r = tonic::Request::new(IssueRequest {
                subject: format!("load-{w}-{i}"),
                audience: crate::harness::AUDIENCE.into(),
                ..Default::default()
            });
            r.set_timeout(deadline);
            match app.issuer.clone().issue(r).await {
                Ok(r) => {
                    seen.families.push(r.into_inner().family_id);
                    "OK".to_owned()
                }
                Err(e) => outcome(&e),
            }
        } else {
            let jti = format!("cancel-{w}-{i}");
            let mut r = tonic::Request::new(crate::outages::jti_revocation(&jti, exp));
            r.set_timeout(deadline);
            match app.revocation.clone().revoke(r).await {
                Ok(_) => {
                    seen.jtis.push(jti);
                    "OK".to_owned()
                }
                Err(e) => outcome(&e),
            }
        };
        seen.slowest = seen.slowest.max(asked.elapsed());
        *seen.codes.entry(code).or_default() += 1;
    }
    seen
}

/// Postgres frozen 20 s (SIGSTOP) under Issue and Revoke load whose calls
/// are cancelled by their deadlines at every step, then thawed: every
/// acknowledged write is in the store (read from a fresh connection), and
/// no Tessera connection is left inside a transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_under_a_frozen_postgres_lose_nothing() {
    let (pg, _redis, d) = private_deployment().await;
    let app = d.start().await;
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..8)
        .map(|w| {
            tokio::spawn(cancelling_load(
                app.clone_clients(),
                w,
                d.clock_now() + 3600,
                stop.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    pg.freeze();
    tokio::time::sleep(Duration::from_secs(20)).await;
    pg.thaw();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Seen::default();
    for w in workers {
        let s = w.await.unwrap();
        all.families.extend(s.families);
        all.jtis.extend(s.jtis);
        all.slowest = all.slowest.max(s.slowest);
        for (c, n) in s.codes {
            *all.codes.entry(c).or_default() += n;
        }
    }
    // Every call has been answered; what is still inside a transaction now
    // was left there (the idle-in-transaction timeout is 5 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut admin = sqlx::PgConnection::connect(&pg.admin_url()).await.unwrap();
    let dirty: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state LIKE 'idle in transaction%'",
    )
    .bind(d.database_name.clone().unwrap())
    .fetch_one(&mut admin)
    .await
    .unwrap();
    let mut db = sqlx::PgConnection::connect(&d.store_url()).await.unwrap();
    let mut lost = 0;
    for (sql, ids) in [
        (
            "SELECT count(*) FROM families WHERE family_id = $1",
            &all.families,
        ),
        (
            "SELECT count(*) FROM revoked_tokens WHERE jti = $1",
            &all.jtis,
        ),
    ] {
        for id in ids {
            let n: i64 = sqlx::query_scalar(sql)
                .bind(id)
                .fetch_one(&mut db)
                .await
                .unwrap();
            lost += usize::from(n != 1);
        }
    }
    println!(
        "frozen Postgres, cancelled calls: codes {:?}; slowest answer {:?}; {} acknowledged writes, {lost} lost; {dirty} connections left in a transaction",
        all.codes,
        all.slowest,
        all.families.len() + all.jtis.len()
    );
    assert!(
        all.codes.keys().any(|c| c.contains("OUTCOME_UNKNOWN")),
        "calls were cut"
    );
    assert!(
        all.codes.get("OK").copied().unwrap_or(0) > 0,
        "calls succeeded"
    );
    assert_eq!((lost, dirty), (0, 0), "no lost write, no dirty connection");
    app.stop().await;
    d.cleanup().await;
}

/// One family's row held locked for 40 s by another session while 20
/// clients refresh it: their refreshes answer UNAVAILABLE at the lock
/// timeout, and unrelated Issues keep succeeding all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_family_row_does_not_starve_other_calls() {
    let (_pg, _redis, d) = private_deployment().await;
    let mut app = d.start().await;
    let hot = app.issue("hot").await;
    let mut locker = sqlx::PgConnection::connect(&d.store_url()).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM families WHERE family_id = $1 FOR UPDATE")
        .bind(&hot.family_id)
        .execute(&mut *lock)
        .await
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let refreshers: Vec<_> = (0..20)
        .map(|_| {
            let (mut a, stop, token) =
                (app.clone_clients(), stop.clone(), hot.refresh_token.clone());
            tokio::spawn(async move {
                let mut codes = BTreeMap::<String, u64>::new();
                let mut slowest = Duration::ZERO;
                while !stop.load(Ordering::Relaxed) {
                    let asked = Instant::now();
                    let code = match a.refresh(&token).await {
                        Ok(_) => "OK".to_owned(),
                        Err(e) => outcome(&e),
                    };
                    slowest = slowest.max(asked.elapsed());
                    *codes.entry(code).or_default() += 1;
                }
                (codes, slowest)
            })
        })
        .collect();
    let held = Instant::now();
    let (mut issued, mut failed, mut slowest_issue) = (0, Vec::new(), Duration::ZERO);
    while held.elapsed() < Duration::from_secs(40) {
        let asked = Instant::now();
        match app.try_issue("bystander").await {
            Ok(_) => issued += 1,
            Err(e) => failed.push(outcome(&e)),
        }
        slowest_issue = slowest_issue.max(asked.elapsed());
        // Paced (about 50 logins a second), so 40 s of it weighs little
        // on the tests running beside it.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut codes = BTreeMap::<String, u64>::new();
    let mut slowest_refresh = Duration::ZERO;
    for r in refreshers {
        let (c, s) = r.await.unwrap();
        slowest_refresh = slowest_refresh.max(s);
        for (k, n) in c {
            *codes.entry(k).or_default() += n;
        }
    }
    lock.rollback().await.unwrap();
    println!(
        "family row locked 40 s, 20 refreshers: refresh codes {codes:?}, slowest {slowest_refresh:?}; unrelated Issue {issued} OK, {} failed, slowest {slowest_issue:?}",
        failed.len()
    );
    assert!(failed.is_empty(), "unrelated Issues failed: {failed:?}");
    assert!(issued > 0);
    assert!(
        codes.keys().all(|c| c.starts_with("Unavailable")),
        "a locked family answers UNAVAILABLE: {codes:?}"
    );
    // Released: the family refreshes again.
    assert!(app.refresh(&hot.refresh_token).await.is_ok());
    app.stop().await;
    d.cleanup().await;
}
