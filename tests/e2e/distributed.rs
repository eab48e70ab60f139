//! What only the Postgres + Redis deployment does: several instances share
//! keys and revocations; Redis carries revocations with a TTL'd deny-list;
//! Postgres is the truth.

use crate::harness::{Backend, Deployment, redis_url};
use deadpool_redis::redis::AsyncCommands;
use std::time::{Duration, Instant};
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
    let start = Instant::now();
    let mut seen = b.verify(&issued.access_token).await;
    while seen.is_ok() && start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = b.verify(&issued.access_token).await;
    }
    assert_eq!(seen, Err(VerifyFailure::Revoked));
    println!("revocation reached instance B in {:?}", start.elapsed());
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deny_list_entry_expires_with_the_token_and_postgres_is_the_truth() {
    let d = Deployment::new(Backend::Distributed).await;
    let mut app = d.start().await;
    let issued = app.issue("user-y").await;
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

    // Deleting the Redis entry by hand does not resurrect the token: a new
    // instance rebuilds its view from Postgres, and STRONG reads Postgres.
    let _: i64 = r.del(&key).await.unwrap();
    app.stop().await;
    let mut again = d.start().await;
    assert_eq!(
        again.verify(&issued.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert_eq!(
        again.verify_strong(&issued.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    again.stop().await;
    d.cleanup().await;
}
