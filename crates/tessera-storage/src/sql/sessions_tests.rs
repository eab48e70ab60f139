//! Rotation and redemption as the store applies the domain's decisions: the
//! writes each decision makes, and single use under concurrency. On SQLite
//! always; on Postgres too when `TESSERA_TEST_DATABASE_URL` names a cluster
//! to create a scratch database in (as `scripts/test.sh` does).

use super::*;
use std::sync::Arc;
use tessera_domain::purpose::{binding_hash, decide_redeem};
use tessera_domain::random_id;
use tessera_domain::refresh::{FamilyPolicy, RotateRequest, decide};
use tessera_domain::revocation::RevocationEvent;
use tessera_domain::store::RevocationStore;

const NOW: i64 = 1_700_000_000;
const POLICY: FamilyPolicy = FamilyPolicy {
    idle_timeout: 600,
    absolute_lifetime: 3600,
    grace: 5,
};

/// One refresh, decided by the domain as the issuer asks for it.
async fn refresh(
    store: &SqlStore,
    presented: u8,
    successor: u8,
    now: i64,
    scopes: &[String],
) -> RotateOutcome {
    let req = RotateRequest {
        successor: [successor; 32],
        policy: POLICY,
        now,
    };
    store
        .rotate(&[presented; 32], &|s: &FamilySnapshot| {
            decide(s, &req, scopes, None)
        })
        .await
        .unwrap()
}

/// One redemption, decided by the domain as the issuer asks for it.
async fn redeem(store: &SqlStore, jti: &str, binding: &str, now: i64) -> RedeemOutcome {
    let presented = binding_hash(binding);
    store
        .redeem_purpose(jti, &|p: &PurposeRecord| decide_redeem(p, presented, now))
        .await
        .unwrap()
}

async fn open(store: &SqlStore, first: u8) -> String {
    let family_id = random_id();
    let family = NewFamily {
        family_id: family_id.clone(),
        subject: "alice".into(),
        audience: "api".into(),
        scope: "read write".into(),
        client_id: String::new(),
        refresh_token_hash: [first; 32],
        created_at: NOW,
        idle_expires_at: NOW + 600,
        absolute_expires_at: NOW + 3600,
        subject_version: 0,
        extra_claims: Map::new(),
        owner: None,
    };
    store.open_family(&family).await.unwrap();
    family_id
}

fn fresh(o: &RotateOutcome) -> Option<bool> {
    match o {
        RotateOutcome::Rotated { fresh, .. } => Some(*fresh),
        _ => None,
    }
}

async fn rotation(store: &SqlStore) {
    let family_id = open(store, 1).await;
    let o = refresh(store, 1, 2, NOW + 10, &[]).await;
    assert!(
        matches!(&o, RotateOutcome::Rotated { family, fresh: true } if family.idle_expires_at == NOW + 610),
        "{o:?}"
    );
    assert_eq!(
        fresh(&refresh(store, 1, 2, NOW + 12, &[]).await),
        Some(false)
    );
    // A refusal writes nothing: the token stays current.
    let admin = ["admin".to_owned()];
    let o = refresh(store, 2, 3, NOW + 20, &admin).await;
    assert!(matches!(o, RotateOutcome::ScopeNotGranted), "{o:?}");
    assert_eq!(
        fresh(&refresh(store, 2, 3, NOW + 21, &[]).await),
        Some(true)
    );
    let o = refresh(store, 1, 2, NOW + 30, &[]).await;
    assert!(matches!(o, RotateOutcome::Reused { .. }), "{o:?}");
    let o = refresh(store, 3, 4, NOW + 31, &[]).await;
    assert!(matches!(o, RotateOutcome::Revoked), "{o:?}");
    let q = tessera_domain::reconcile::LogQuery::default();
    let logged = store.revocations_after(&q, 0).await.unwrap().rows;
    assert!(logged.iter().any(|r| matches!(&r.event,
        RevocationEvent::Family { family_id: f, until } if *f == family_id && *until == NOW + 30)));
    let unasked = store
        .rotate(&[99; 32], &|_: &FamilySnapshot| {
            panic!("no snapshot, no plan")
        })
        .await
        .unwrap();
    assert!(matches!(unasked, RotateOutcome::Unknown));
}

async fn redemption(store: &SqlStore) {
    let jti = random_id();
    let bound = binding_hash("a@example.com");
    store
        .record_purpose(&jti, "alice", "password-reset+jwt", bound, NOW + 3600, None)
        .await
        .unwrap();
    assert_eq!(
        redeem(store, &jti, "", NOW).await,
        RedeemOutcome::BindingMismatch
    );
    assert_eq!(
        redeem(store, &jti, "a@example.com", NOW + 1).await,
        RedeemOutcome::Redeemed
    );
    let at: Option<i64> =
        sqlx::query_scalar("SELECT redeemed_at FROM purpose_tokens WHERE jti = $1")
            .bind(&jti)
            .fetch_one(&store.pool)
            .await
            .unwrap();
    assert_eq!(at, Some(NOW + 1));
    assert_eq!(
        redeem(store, &jti, "a@example.com", NOW + 2).await,
        RedeemOutcome::AlreadyUsed
    );
    assert_eq!(
        redeem(store, &jti, "b@example.com", NOW + 2).await,
        RedeemOutcome::BindingMismatch
    );
    let unasked = store
        .redeem_purpose("nope", &|_: &PurposeRecord| panic!("no row, no plan"))
        .await
        .unwrap();
    assert_eq!(unasked, RedeemOutcome::Unknown);
}

/// Eight callers at once, released together: one rotation and seven
/// replays of it; then one redemption and seven refusals.
async fn races(store: &SqlStore) {
    open(store, 50).await;
    let jti = random_id();
    store
        .record_purpose(
            &jti,
            "alice",
            "email-verification+jwt",
            None,
            NOW + 3600,
            None,
        )
        .await
        .unwrap();
    let gate = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, jti, gate) = (store.clone(), jti.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                let rotated = fresh(&refresh(&store, 50, 51, NOW + 1, &[]).await);
                gate.wait().await;
                (rotated, redeem(&store, &jti, "", NOW + 1).await)
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let rotated = |fresh| outcomes.iter().filter(|o| o.0 == Some(fresh)).count();
    let redeemed = |r| outcomes.iter().filter(|o| o.1 == r).count();
    assert_eq!(rotated(true), 1, "{outcomes:?}");
    assert_eq!(rotated(false), 7, "{outcomes:?}");
    assert_eq!(redeemed(RedeemOutcome::Redeemed), 1, "{outcomes:?}");
    assert_eq!(redeemed(RedeemOutcome::AlreadyUsed), 7, "{outcomes:?}");
}

/// Writes cut off by timeouts from 0 to 3 ms (the timer's resolution is a
/// millisecond, so the cuts land where the runtime's timer ticks): every write that
/// returned Ok is in the store as read through a fresh pool (`url`), and no
/// connection was left inside a transaction (Postgres: none is "idle in
/// transaction"; a pooled one would hide the next caller's writes).
async fn cancellations(store: &SqlStore, url: &str) {
    let mut acked = Vec::new();
    for i in 0..400usize {
        let jti = format!("cut-{i}");
        let cut = std::time::Duration::from_micros(u64::try_from(i).unwrap() * 37 % 3000);
        if let Ok(r) = tokio::time::timeout(cut, store.revoke_jti(&jti, NOW + 60, NOW)).await {
            r.unwrap();
            acked.push(jti);
        }
    }
    assert!(acked.len() < 400, "some writes were cut");
    // Connections go back to the pool in the background: let them.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let fresh = SqlStore::connect(url).await.unwrap();
    if fresh.backend == Backend::Postgres {
        let dirty: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND state LIKE 'idle in transaction%'",
        )
        .fetch_one(&fresh.pool)
        .await
        .unwrap();
        assert_eq!(dirty, 0, "connections left inside a transaction");
    }
    // Every pooled connection used again.
    for i in 0..32 {
        let jti = format!("after-{i}");
        store.revoke_jti(&jti, NOW + 60, NOW).await.unwrap();
        acked.push(jti);
    }
    let mut missing = 0;
    for jti in &acked {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1")
            .bind(jti)
            .fetch_one(&fresh.pool)
            .await
            .unwrap();
        missing += usize::from(n != 1);
    }
    assert_eq!(
        missing,
        0,
        "acknowledged writes missing ({} acknowledged)",
        acked.len()
    );
    fresh.close().await;
}

async fn exercise(store: &SqlStore, url: &str) {
    store.migrate().await.unwrap();
    rotation(store).await;
    redemption(store).await;
    races(store).await;
    cancellations(store, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_sqlite() {
    let path = std::env::temp_dir().join(format!("tessera-storage-{}.db", random_id()));
    let url = format!("sqlite:{}", path.display());
    let store = SqlStore::connect(&url).await.unwrap();
    exercise(&store, &url).await;
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn on_postgres() {
    let Ok(admin_url) = std::env::var("TESSERA_TEST_DATABASE_URL") else {
        eprintln!("TESSERA_TEST_DATABASE_URL is not set: Postgres not exercised");
        return;
    };
    // Named like the end-to-end suite's databases, so `scripts/test.sh`
    // drops one an interrupted run left behind.
    let name = format!("tessera_t_{}", random_id().to_lowercase().replace('-', "_"));
    let admin = SqlStore::connect(&admin_url).await.unwrap();
    let ddl = |verb: &str| sqlx::AssertSqlSafe(format!("{verb} DATABASE {name}"));
    sqlx::query(ddl("CREATE"))
        .execute(&admin.pool)
        .await
        .unwrap();
    let (path, query) = admin_url.split_once('?').unwrap_or((&admin_url, ""));
    let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
    let sep = if query.is_empty() { "" } else { "?" };
    let url = format!("{base}/{name}{sep}{query}");
    let store = SqlStore::connect(&url).await.unwrap();
    exercise(&store, &url).await;
    store.close().await;
    sqlx::query(ddl("DROP")).execute(&admin.pool).await.unwrap();
    admin.close().await;
}
