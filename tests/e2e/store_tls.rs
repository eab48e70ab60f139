//! Tessera's own store connections over TLS: a Postgres
//! and a Redis of the test's own, on loopback, that take TLS connections
//! only, with certificates made at test time (`crate::pki`). Postgres TLS is
//! chosen by the URL (`sslmode=verify-full&sslrootcert=…`, as with libpq),
//! Redis TLS by a `rediss://` URL and the CA setting.

use crate::harness::{Backend, Deployment, OwnPostgres, OwnRedis, eventually, verify_token};
use crate::pki::TestPki;
use deadpool_redis::redis::{self, AsyncCommands, ClientTlsConfig, TlsCertificates};
use std::time::Duration;
use tessera::{Application, Config};
use tessera_bench::RedisTlsFiles;
use tessera_proto::v1::VerifyFailure;
use tessera_proto::v1::revoke_request::Target;

/// A TLS-only Postgres and Redis, and the certificates they were started
/// with. A `redis-server` without TLS fails here, naming the cause.
struct Stores {
    pki: TestPki,
    pg: OwnPostgres,
    redis: OwnRedis,
}

fn tls_stores(require_client_cert: bool) -> Stores {
    let pki = TestPki::generate();
    let pg = OwnPostgres::start_tls(&pki);
    let redis = OwnRedis::start_tls(RedisTlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        ca: pki.ca.clone(),
        auth_clients: require_client_cert,
    })
    .unwrap_or_else(|e| panic!("a TLS redis-server for the store TLS tests: {e}"));
    Stores { pki, pg, redis }
}

/// A deployment whose database lives in the TLS Postgres (the URL trusts
/// the test CA, and verifies the server's name) and whose Redis is the TLS
/// one, trusting the test CA.
async fn deployment(s: &Stores) -> Deployment {
    let mut d = Deployment::new_on(Backend::Distributed, &s.pg.admin_url()).await;
    assert!(
        d.database_url
            .as_ref()
            .unwrap()
            .contains("?sslmode=verify-full&sslrootcert="),
        "the deployment's URL keeps the TLS options"
    );
    d.redis_url = s.redis.url();
    d.redis_tls.ca_file = Some(s.pki.ca.clone());
    d
}

/// The error of an application that must not start.
async fn refused(cfg: Config) -> String {
    match Application::build(cfg).await {
        Ok(_) => panic!("the application started"),
        Err(e) => {
            println!("refused to start: {e}");
            e.to_string()
        }
    }
}

/// A connection to the TLS Redis that trusts the test CA (and presents the
/// client certificate when asked to).
async fn tls_redis(s: &Stores, with_client_cert: bool) -> redis::aio::MultiplexedConnection {
    let client_tls = with_client_cert.then(|| ClientTlsConfig {
        client_cert: std::fs::read(&s.pki.client_cert).unwrap(),
        client_key: std::fs::read(&s.pki.client_key).unwrap(),
    });
    let certs = TlsCertificates {
        client_tls,
        root_cert: Some(std::fs::read(&s.pki.ca).unwrap()),
    };
    redis::Client::build_with_tls(s.redis.url(), certs)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Issue on A, Verify on B, Revoke on A: B rejects the token once the
/// revocation reaches it, which (with a reconcile interval far beyond the
/// wait) only Redis pub/sub over TLS can do in time. Every connection of
/// the apps to their database is TLS, as Postgres itself reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_revoke_verify_over_tls_to_postgres_and_redis() {
    let s = tls_stores(false);
    let mut d = deployment(&s).await;
    d.reconcile_interval = Duration::from_secs(60);
    let mut a = d.start().await;
    let mut b = d.start().await;
    let issued = a.issue("tls-user").await;
    assert_eq!(b.verify(&issued.access_token).await, Ok(()));
    assert_eq!(
        a.revoke(Target::Token(issued.access_token.clone())).await,
        1
    );
    let took = eventually("B hears of the revocation through Redis over TLS", || {
        let (mut client, token) = (b.introspection.clone(), issued.access_token.clone());
        async move { verify_token(&mut client, &token).await == Err(VerifyFailure::Revoked) }
    })
    .await;
    println!("a revocation reached instance B through TLS Redis in {took:?}");
    // STRONG reads the TLS Postgres.
    assert_eq!(
        a.verify_strong(&issued.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    // The deny-list entry is in the TLS Redis.
    let key = format!("{}deny:jti:{}", d.redis_prefix, issued.access_token_id);
    let exists: bool = tls_redis(&s, false).await.exists(&key).await.unwrap();
    assert!(exists, "{key} in the TLS Redis");
    // Postgres's own view of the apps' connections.
    let mut pg = <sqlx::PgConnection as sqlx::Connection>::connect(&s.pg.admin_url())
        .await
        .unwrap();
    let (tls, plain): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FILTER (WHERE NOT s.ssl) \
         FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.datname = $1",
    )
    .bind(d.database_name.as_ref().unwrap())
    .fetch_one(&mut pg)
    .await
    .unwrap();
    assert!(
        tls > 0 && plain == 0,
        "{tls} TLS, {plain} plain connections"
    );
    // A refresh (a write transaction) works over TLS too.
    let session = a.issue("tls-user-2").await;
    a.refresh(&session.refresh_token).await.unwrap();
    a.stop().await;
    b.stop().await;
    d.cleanup().await;
}

/// The wrong CA (same name, another key) refuses to start, and the error
/// names the setting and what failed, never a password from the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_refuses_to_start_naming_the_setting() {
    let s = tls_stores(false);
    let d = deployment(&s).await;
    let (ca, other) = (s.pki.ca.to_str().unwrap(), s.pki.other_ca.to_str().unwrap());

    let mut cfg = d.config();
    cfg.database_url = Some(
        d.database_url
            .as_ref()
            .unwrap()
            .replace(ca, other)
            .replace("postgres://postgres@", "postgres://postgres:pg-Secret-42@"),
    );
    let e = refused(cfg).await;
    assert!(
        e.contains("database_url postgres://postgres@")
            && e.contains(": TLS handshake failed: invalid peer certificate")
            && e.contains("check sslrootcert"),
        "{e}"
    );
    assert!(!e.contains("pg-Secret-42"), "{e}");

    let mut cfg = d.config();
    cfg.redis_url = Some(
        s.redis
            .url()
            .replace("rediss://", "rediss://:redis-Secret-42@"),
    );
    cfg.redis_tls.ca_file = Some(s.pki.other_ca.clone());
    let e = refused(cfg.clone()).await;
    assert!(
        e.contains("redis_url rediss://")
            && e.contains(": TLS handshake failed: invalid peer certificate")
            && e.contains("check redis_ca_file"),
        "{e}"
    );
    assert!(!e.contains("redis-Secret-42"), "{e}");
    // No CA file: the public roots do not know the test CA either.
    cfg.redis_tls.ca_file = None;
    let e = refused(cfg.clone()).await;
    assert!(
        e.contains("redis_url rediss://") && e.contains(": TLS handshake failed"),
        "{e}"
    );
    // A CA file that is not a certificate, and TLS files with a plain URL:
    // refused, not ignored.
    cfg.redis_tls.ca_file = Some(s.pki.server_key.clone());
    let e = refused(cfg.clone()).await;
    assert!(
        e.contains("redis_ca_file") && e.contains("no PEM certificate"),
        "{e}"
    );
    assert!(!e.contains("PRIVATE KEY"), "{e}");
    cfg.redis_url = Some(s.redis.url().replace("rediss://", "redis://"));
    cfg.redis_tls.ca_file = Some(s.pki.ca.clone());
    let e = refused(cfg).await;
    assert!(
        e.contains("redis_ca_file") && e.contains("rediss://"),
        "{e}"
    );

    // With the right CA it starts.
    d.start().await.stop().await;
    d.cleanup().await;
}

/// TLS is really used: the Postgres takes no plain connection (pg_hba has
/// `hostssl` only), `sslmode=require` works without a CA, and a plain Redis
/// client gets nothing from the TLS port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_to_the_tls_only_stores_is_refused() {
    let s = tls_stores(false);
    let url = |mode: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}",
            s.pg.port
        )
    };
    let err = <sqlx::PgConnection as sqlx::Connection>::connect(&url("disable"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no encryption"), "{err}");
    // Encrypted without checking the certificate: the bare `tls error` of
    // the tls-none build is gone.
    <sqlx::PgConnection as sqlx::Connection>::connect(&url("require"))
        .await
        .unwrap();

    let d = deployment(&s).await;
    let mut cfg = d.config();
    cfg.database_url = Some(
        d.database_url
            .as_ref()
            .unwrap()
            .replace("sslmode=verify-full", "sslmode=disable"),
    );
    let e = refused(cfg).await;
    assert!(
        e.contains("database_url postgres://")
            && e.contains(": could not connect: the server refused the connection (SQLSTATE 28000: no pg_hba.conf entry")
            && e.contains("see sslmode in database_url"),
        "{e}"
    );

    let mut cfg = d.config();
    cfg.redis_url = Some(s.redis.url().replace("rediss://", "redis://"));
    cfg.redis_tls = Default::default();
    let e = refused(cfg).await;
    assert!(e.contains("redis_url"), "{e}");
    d.cleanup().await;
}

/// A Redis that asks for client certificates (`tls-auth-clients yes`):
/// refused at start without one, working with `redis_client_cert` and
/// `redis_client_key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mtls_takes_the_client_certificate() {
    let s = tls_stores(true);
    let mut d = deployment(&s).await;
    let e = refused(d.config()).await;
    assert!(
        e.contains("redis_url rediss://") && e.contains(": TLS handshake failed"),
        "{e}"
    );

    d.redis_tls.client_cert_file = Some(s.pki.client_cert.clone());
    d.redis_tls.client_key_file = Some(s.pki.client_key.clone());
    let mut app = d.start().await;
    let issued = app.issue("mtls-user").await;
    assert_eq!(
        app.revoke(Target::Token(issued.access_token.clone())).await,
        1
    );
    assert_eq!(
        app.verify(&issued.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    let key = format!("{}deny:jti:{}", d.redis_prefix, issued.access_token_id);
    let exists: bool = tls_redis(&s, true).await.exists(&key).await.unwrap();
    assert!(exists, "{key} in the mTLS Redis");
    app.stop().await;
    d.cleanup().await;
}
