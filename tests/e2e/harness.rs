//! `spawn_app`: the real application on port 0, real gRPC clients.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera::kek::KekSource;
use tessera::{Application, Config};
use tessera_domain::clock::ManualClock;
use tessera_domain::policy::Policy;
use tessera_domain::refresh::FamilyPolicy;
use tessera_domain::schedule::KeySchedule;
use tessera_proto::v1::introspection_service_client::IntrospectionServiceClient;
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    Consistency, IssueRequest, IssueResponse, RefreshRequest, RefreshResponse, RevokeRequest,
    TokenKind, VerifyFailure, VerifyRequest, VerifyResponse,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

/// Where the durable state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in a data directory, in-process bus.
    Embedded,
    /// Postgres + Redis.
    Distributed,
}

/// Runs an async test body once per backend, as two named tests. With
/// `current_thread:` first, on a current-thread runtime: the app's tasks
/// then run on the test's thread, under the tracing subscriber the test
/// sets (an audit capture).
macro_rules! on_both_backends {
    (current_thread: $($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::harness::Backend;
            #[tokio::test]
            async fn embedded() {
                super::$name(Backend::Embedded).await
            }
            #[tokio::test]
            async fn postgres_redis() {
                super::$name(Backend::Distributed).await
            }
        }
    )*};
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use crate::harness::Backend;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$name(Backend::Embedded).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_redis() {
                super::$name(Backend::Distributed).await
            }
        }
    )*};
}
pub(crate) use on_both_backends;

pub const AUDIENCE: &str = "orders-api";
pub const ISSUER: &str = "https://tessera.test";

fn hex_id() -> String {
    tessera_domain::random_bytes(6)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn admin_database_url() -> String {
    std::env::var("TESSERA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("TESSERA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The durable identity of a deployment: survives an application restart.
#[derive(Debug, Clone)]
pub struct Deployment {
    pub backend: Backend,
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    pub database_name: Option<String>,
    pub redis_prefix: String,
    /// The Redis the distributed deployment uses (the shared one, unless a
    /// fault test starts its own).
    pub redis_url: String,
    /// With a `rediss://` Redis: the CA and client certificate.
    pub redis_tls: tessera_storage::RedisTls,
    /// How often started apps reconcile their view from the store.
    pub reconcile_interval: Duration,
    /// The cluster the deployment's database lives in.
    pub admin_url: String,
    pub clock: ManualClock,
    /// Family rules the next `start` uses.
    pub families: FamilyPolicy,
    /// Key schedule the next `start` uses.
    pub keys: KeySchedule,
    /// How often started apps apply the key schedule.
    pub key_tick: Duration,
}

/// With `TESSERA_TEST_LOG` set, every app's logs (DEBUG and up) go to that
/// file, which `scripts/test.sh` then searches for key material.
fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(path) = std::env::var("TESSERA_TEST_LOG") {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("open TESSERA_TEST_LOG");
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(file))
                .try_init();
        }
    });
}

/// Appends secrets the logs must never contain to `TESSERA_TEST_SECRETS`,
/// one per line.
pub fn record_secrets(secrets: &[String]) {
    use std::io::Write;
    // Tests run in parallel: one locked write per call, so two tests'
    // secrets never interleave into a merged line and an empty one.
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Ok(path) = std::env::var("TESSERA_TEST_SECRETS") {
        let lines: String = secrets.iter().map(|s| format!("{s}\n")).collect();
        let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(lines.as_bytes()))
            .expect("append to TESSERA_TEST_SECRETS");
    }
}

/// The KEK of a data directory and every private key of its store, in the
/// encodings a leak would most likely take.
pub async fn key_material(data_dir: &std::path::Path, store_url: &str) -> Vec<String> {
    use base64::Engine as _;
    use tessera_domain::store::KeyStore;
    let Ok(kek_text) = std::fs::read_to_string(data_dir.join("kek")) else {
        return Vec::new();
    };
    assert!(
        !kek_text.trim().is_empty(),
        "an empty KEK file in {} at cleanup",
        data_dir.display()
    );
    let mut out = vec![kek_text.trim().to_owned()];
    let kek = tessera::kek::load(&KekSource::DataDir, data_dir).unwrap();
    let store = tessera_storage::SqlStore::connect(store_url).await.unwrap();
    for k in store.load_keys().await.unwrap() {
        if k.kek_id != kek.id() {
            continue;
        }
        let pkcs8 = kek.open(&k.kid, &k.sealed_private).unwrap();
        let bytes = pkcs8.expose();
        out.push(tessera_domain::b64url_encode(bytes));
        out.push(base64::engine::general_purpose::STANDARD.encode(bytes));
        out.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
    }
    store.close().await;
    out
}

impl Deployment {
    /// A fresh deployment: new data dir; for Postgres a new database.
    pub async fn new(backend: Backend) -> Self {
        Self::new_on(backend, &admin_database_url()).await
    }

    /// A deployment whose database lives in the cluster at `admin` (the
    /// fault tests' own).
    pub async fn new_on(backend: Backend, admin: &str) -> Self {
        init_logs();
        tessera::install_crypto_provider();
        let id = hex_id();
        let data_dir = std::env::temp_dir().join(format!("tessera-test-{id}"));
        let (database_url, database_name) = match backend {
            Backend::Embedded => (None, None),
            Backend::Distributed => {
                let admin = admin.to_owned();
                let name = format!("tessera_t_{id}");
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "Postgres is not reachable at {admin} ({e}); run scripts/test.sh, which starts it, or set TESSERA_TEST_DATABASE_URL"
                        )
                    });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create the test database");
                // The admin URL's options (e.g. sslmode, sslrootcert, whose
                // path has slashes of its own) carry over to the new database.
                let (path, query) = admin
                    .split_once('?')
                    .map_or((admin.as_str(), String::new()), |(p, q)| {
                        (p, format!("?{q}"))
                    });
                let base = path.rsplit_once('/').map_or(path, |(b, _)| b);
                (Some(format!("{base}/{name}{query}")), Some(name))
            }
        };
        if backend == Backend::Distributed {
            // The deployment's KEK, shared by every instance started on it.
            {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&data_dir)
                    .unwrap();
            }
            tessera::kek::load(&KekSource::DataDir, &data_dir).expect("create the test KEK");
        }
        Self {
            backend,
            data_dir,
            database_url,
            database_name,
            redis_prefix: format!("tessera-test-{id}:"),
            redis_url: redis_url(),
            redis_tls: Default::default(),
            reconcile_interval: Duration::from_millis(200),
            admin_url: admin.to_owned(),
            clock: ManualClock::starting_now(),
            families: FamilyPolicy::default(),
            keys: KeySchedule::default(),
            key_tick: Duration::from_millis(100),
        }
    }

    pub fn config(&self) -> Config {
        Config {
            role: tessera::Role::All,
            issuer_endpoint: None,
            revocation_endpoint: None,
            unknown_kid_refetch: Duration::from_secs(10),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: self.data_dir.clone(),
            database_url: self.database_url.clone(),
            redis_url: (self.backend == Backend::Distributed).then(|| self.redis_url.clone()),
            redis_prefix: self.redis_prefix.clone(),
            redis_tls: self.redis_tls.clone(),
            // A shared store needs a supplied KEK: the deployment's own file.
            kek: match self.backend {
                Backend::Embedded => KekSource::DataDir,
                Backend::Distributed => KekSource::File(self.data_dir.join("kek")),
            },
            previous_kek: None,
            migrate: true,
            policy: Policy {
                issuer: ISSUER.into(),
                extra_claims_allowlist: vec!["tenant".into()],
                ..Policy::default()
            },
            families: self.families,
            clock: Arc::new(self.clock.clone()),
            keys: self.keys,
            key_tick: self.key_tick,
            allow_insecure_listen: false,
            verify_cache_bytes: 8 << 20,
            reconcile_interval: self.reconcile_interval,
            max_view_staleness: 30,
            gateway_routes_file: None,
            store_timeouts: tessera_storage::StoreTimeouts::default(),
            issuer_set: true,
            edge: tessera::Edge::default(),
        }
    }

    /// Starts an application on this deployment.
    pub async fn start(&self) -> TestApp {
        self.start_with(self.config()).await
    }

    /// Starts an application from `cfg` (this deployment's, changed).
    pub async fn start_with(&self, cfg: Config) -> TestApp {
        let (mut app, stop, handle) = start_config(cfg).await;
        app.stop = Some(stop);
        app.handle = Some(handle);
        app
    }

    /// The deployment clock's now.
    pub fn clock_now(&self) -> i64 {
        use tessera_domain::clock::Clock;
        self.clock.now()
    }

    /// The URL of this deployment's durable store.
    pub fn store_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("tessera.db").display()))
    }

    /// One integer from the deployment's own database (Postgres or the
    /// SQLite file), for checks that only the store can answer.
    pub async fn count(&self, sql: &'static str, arg: &str) -> i64 {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.store_url())
            .await
            .unwrap();
        sqlx::query_scalar(sql)
            .bind(arg)
            .fetch_one(&mut conn)
            .await
            .unwrap()
    }

    /// Runs one statement with one text argument on the deployment's own
    /// database (to set up states only a race would otherwise produce).
    pub async fn execute(&self, sql: &'static str, arg: &str) {
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&self.store_url())
            .await
            .unwrap();
        sqlx::query(sql).bind(arg).execute(&mut conn).await.unwrap();
    }

    /// Takes the deployment's Postgres database away (no new connections,
    /// the open ones terminated) or gives it back.
    pub async fn allow_connections(&self, allow: bool) {
        let name = self.database_name.as_ref().expect("a Postgres deployment");
        let mut pg = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url)
            .await
            .unwrap();
        let sql = |s: String| sqlx::query(sqlx::AssertSqlSafe(s));
        sql(format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}"))
            .execute(&mut pg)
            .await
            .unwrap();
        if !allow {
            sql(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
            ))
            .execute(&mut pg)
            .await
            .unwrap();
        }
    }

    /// Drops the database and the data directory (first recording its key
    /// material for the log scan).
    pub async fn cleanup(self) {
        if std::env::var("TESSERA_TEST_SECRETS").is_ok() {
            record_secrets(&key_material(&self.data_dir, &self.store_url()).await);
        }
        if let Some(name) = &self.database_name {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&self.admin_url)
                .await
                .unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await
            .unwrap();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Starts an application from `cfg`; the caller owns its stop switch.
pub async fn start_config(
    cfg: Config,
) -> (
    TestApp,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tessera::AppError>>,
) {
    let app = Application::build(cfg).await.expect("build the app");
    let addr = app.local_addr();
    let follower = app.key_fetches();
    let ring = app.key_ring();
    let manager = app.key_manager();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .expect("connect to the app");
    let app = TestApp {
        addr,
        issuer: IssuerServiceClient::new(channel.clone()),
        keys: KeyServiceClient::new(channel.clone()),
        introspection: IntrospectionServiceClient::new(channel.clone()),
        revocation: RevocationServiceClient::new(channel.clone()),
        channel,
        follower,
        ring,
        manager,
        stop: None,
        handle: None,
    };
    (app, tx, handle)
}

/// A running application and its clients.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub channel: Channel,
    /// In the introspection role: its key follower.
    pub follower: Option<Arc<tessera_introspection::KeyFollower>>,
    /// The key set Verify trusts, with its verified-signature cache.
    pub ring: Arc<tessera_domain::keys::KeyRing>,
    /// In the issuer roles: the key manager, to force schedule ticks.
    pub manager: Option<Arc<tessera_issuer::KeyManager>>,
    pub issuer: IssuerServiceClient<Channel>,
    pub keys: KeyServiceClient<Channel>,
    pub introspection: IntrospectionServiceClient<Channel>,
    pub revocation: RevocationServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<Result<(), tessera::AppError>>>,
}

impl TestApp {
    /// Another handle on the same server's clients (for concurrent
    /// callers); it cannot stop the server.
    pub fn clone_clients(&self) -> TestApp {
        TestApp {
            addr: self.addr,
            channel: self.channel.clone(),
            follower: self.follower.clone(),
            ring: self.ring.clone(),
            manager: self.manager.clone(),
            issuer: self.issuer.clone(),
            keys: self.keys.clone(),
            introspection: self.introspection.clone(),
            revocation: self.revocation.clone(),
            stop: None,
            handle: None,
        }
    }

    /// `WatchRevocations` from the log's end.
    pub async fn watch_revocations(
        &self,
    ) -> tonic::Streaming<tessera_proto::v1::WatchRevocationsResponse> {
        self.revocation
            .clone()
            .watch_revocations(tessera_proto::v1::WatchRevocationsRequest::default())
            .await
            .unwrap()
            .into_inner()
    }

    /// Graceful shutdown; waits for the server to finish.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.handle.take().unwrap().await.unwrap().unwrap();
    }

    pub async fn issue(&mut self, subject: &str) -> IssueResponse {
        self.try_issue(subject).await.expect("Issue")
    }

    /// `Issue`, or its error status.
    pub async fn try_issue(&self, subject: &str) -> Result<IssueResponse, tonic::Status> {
        self.issuer
            .clone()
            .issue(IssueRequest {
                subject: subject.into(),
                audience: AUDIENCE.into(),
                scopes: vec!["orders:read".into()],
                ..Default::default()
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn verify_with(&mut self, token: &str, consistency: Consistency) -> VerifyResponse {
        self.introspection
            .verify(VerifyRequest {
                token: token.into(),
                expected_audience: AUDIENCE.into(),
                expected_kind: TokenKind::Access.into(),
                consistency: consistency.into(),
            })
            .await
            .expect("Verify")
            .into_inner()
    }

    /// Refresh with `token`.
    pub async fn refresh(&mut self, token: &str) -> Result<RefreshResponse, tonic::Status> {
        self.issuer
            .refresh(RefreshRequest {
                refresh_token: token.into(),
                scopes: vec![],
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Revoke one target; the number revoked.
    pub async fn revoke(&mut self, target: Target) -> u64 {
        self.revocation
            .revoke(RevokeRequest {
                target: Some(target),
                reason: String::new(),
            })
            .await
            .expect("Revoke")
            .into_inner()
            .revoked
    }

    /// A plain HTTP/1.1 GET on the server's port: status line, headers
    /// (lower-cased names) and body.
    pub async fn http_get(&self, path: &str, extra: &str) -> (u16, Vec<(String, String)>, String) {
        http_get(self.addr, path, extra).await
    }

    /// Verify with default consistency; `Ok(())` or the failure.
    pub async fn verify(&mut self, token: &str) -> Result<(), VerifyFailure> {
        verify_token(&mut self.introspection, token).await
    }

    /// Calls Issue on this server; the status code (for role checks).
    pub async fn verify_with_issuer_missing(&mut self) -> tonic::Code {
        self.issuer
            .issue(IssueRequest::default())
            .await
            .map_or_else(|s| s.code(), |_| tonic::Code::Ok)
    }

    /// Verify with STRONG consistency.
    pub async fn verify_strong(&mut self, token: &str) -> Result<(), VerifyFailure> {
        outcome(self.verify_with(token, Consistency::Strong).await)
    }
}

/// A plain HTTP/1.1 GET on `addr`: status line, headers (lower-cased
/// names) and body. `extra`: header lines, each ending in CRLF.
pub async fn http_get(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &str,
) -> (u16, Vec<(String, String)>, String) {
    let headers: Vec<(&str, &str)> = extra
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    crate::gateway_procs::get(addr, path, &addr.to_string(), &headers).await
}

/// An access token for `subject` from `client` (for use where the app is
/// borrowed elsewhere).
pub async fn issue_token(client: &mut IssuerServiceClient<Channel>, subject: &str) -> String {
    client
        .issue(IssueRequest {
            subject: subject.into(),
            audience: AUDIENCE.into(),
            ..Default::default()
        })
        .await
        .expect("Issue")
        .into_inner()
        .access_token
}

/// Verify with default consistency through `client`.
pub async fn verify_token(
    client: &mut IntrospectionServiceClient<Channel>,
    token: &str,
) -> Result<(), VerifyFailure> {
    let r = client
        .verify(VerifyRequest {
            token: token.into(),
            expected_audience: AUDIENCE.into(),
            expected_kind: TokenKind::Access.into(),
            consistency: Consistency::Default.into(),
        })
        .await
        .expect("Verify")
        .into_inner();
    outcome(r)
}

/// A token checked by jsonwebtoken with nothing but our JWKS document, as a
/// third party would; its claims.
pub fn decode_with_jwks(jwks_json: &str, token: &str) -> serde_json::Value {
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(jwks_json).unwrap();
    let header = jsonwebtoken::decode_header(token).unwrap();
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    let key =
        jsonwebtoken::DecodingKey::from_jwk(set.find(header.kid.as_deref().unwrap()).unwrap())
            .unwrap();
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[AUDIENCE]);
    v.set_issuer(&[ISSUER]);
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &v)
        .unwrap()
        .claims
}

pub fn outcome(r: VerifyResponse) -> Result<(), VerifyFailure> {
    if r.valid {
        assert_eq!(r.failure(), VerifyFailure::Unspecified);
        assert!(r.claims.is_some());
        Ok(())
    } else {
        assert!(r.claims.is_none(), "no claims for an invalid token");
        Err(r.failure())
    }
}

/// The `kid` in a token's header.
pub fn kid_of(token: &str) -> String {
    let h = tessera_domain::b64url_decode(token.split('.').next().unwrap()).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&h).unwrap();
    v["kid"].as_str().unwrap().to_owned()
}

/// The ErrorInfo reason of a status.
pub fn reason(s: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    s.get_error_details()
        .error_info()
        .map(|i| i.reason.clone())
        .unwrap_or_default()
}

/// Polls `check` every 20 ms until it holds, and returns how long that took.
/// The 20 s bound is a liveness bound (a test that would otherwise hang),
/// not a speed target: speed is measured by the load generator.
pub async fn eventually<F, Fut>(what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

impl TestApp {
    /// Runs one key-schedule tick now (what the timer would do next).
    pub async fn tick(&self) {
        self.manager
            .as_ref()
            .expect("an issuer role")
            .tick()
            .await
            .unwrap();
    }
}

/// The claims of a token, unverified (for test bookkeeping only).
pub fn decode_payload(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// A fresh deployment and one app on it.
pub async fn spawn_app(backend: Backend) -> (Deployment, TestApp) {
    let d = Deployment::new(backend).await;
    let app = d.start().await;
    (d, app)
}

pub use tessera_bench::OwnRedis;

/// A TCP proxy on a free loopback port that can go silent: frozen, it keeps
/// every connection open but forwards nothing (a peer that vanished without
/// a FIN, a wedged middlebox).
pub struct SilentProxy {
    pub port: u16,
    frozen: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentProxy {
    pub async fn start(target: String) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                    continue;
                };
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                type Half = (
                    Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                );
                let halves: [Half; 2] =
                    [(Box::new(ri), Box::new(wo)), (Box::new(ro), Box::new(wi))];
                for (mut r, mut w) in halves {
                    let f = f.clone();
                    tokio::spawn(async move {
                        let mut buf = [0u8; 8192];
                        loop {
                            let n = match r.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            // Frozen: swallow the bytes, keep the connection.
                            if !f.load(Ordering::Relaxed) && w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { port, frozen, task }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn freeze(&self) {
        self.frozen
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Drop for SilentProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A PostgreSQL cluster of a test's own (`initdb` into a temporary
/// directory, `pg_ctl` on a free loopback port, run as the `postgres` user
/// when the tests run as root), so the test may stop and start it freely.
/// The binaries come from `TESSERA_PG_BINDIR` (scripts/services.sh sets it).
pub struct OwnPostgres {
    pub port: u16,
    dir: PathBuf,
    /// The TLS variant: the CA its clients must trust.
    ca: Option<PathBuf>,
}

impl OwnPostgres {
    fn run(&self, program: &str, args: &[&str]) {
        let bindir = std::env::var("TESSERA_PG_BINDIR").expect(
            "TESSERA_PG_BINDIR (scripts/services.sh sets it) names the PostgreSQL binaries",
        );
        let bin = format!("{bindir}/{program}");
        let root = std::process::Command::new("id")
            .arg("-u")
            .output()
            .unwrap()
            .stdout
            == b"0\n";
        let mut cmd = if root {
            let mut c = std::process::Command::new("su");
            let line = std::iter::once(bin.as_str())
                .chain(args.iter().copied())
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(" ");
            c.args(["postgres", "-s", "/bin/sh", "-c", &line]);
            c
        } else {
            let mut c = std::process::Command::new(&bin);
            c.args(args);
            c
        };
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn start() -> Self {
        let pg = Self::init(None);
        pg.resume();
        pg
    }

    /// A cluster that takes TLS connections only: `ssl = on` with the
    /// test PKI's server certificate, and a pg_hba.conf whose one TCP line
    /// is `hostssl` (a plain connection finds no entry and is refused).
    pub fn start_tls(pki: &crate::pki::TestPki) -> Self {
        let pg = Self::init(Some(pki.ca.clone()));
        let data = pg.dir.join("data");
        let (cert, key) = (data.join("server.pem"), data.join("server.key"));
        std::fs::copy(&pki.server_cert, &cert).unwrap();
        std::fs::copy(&pki.server_key, &key).unwrap();
        // Postgres refuses a key file that others can read, or that another
        // user owns (unless root owns it with mode 0640).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let _ = std::process::Command::new("chown")
            .arg("postgres:postgres")
            .args([&cert, &key])
            .status();
        let conf = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        pg.resume();
        pg
    }

    fn init(ca: Option<PathBuf>) -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("tessera-pg-{}", hex_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status();
        let pg = Self { port, dir, ca };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        pg
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`; for the TLS variant
    /// with `?sslmode=verify-full&sslrootcert=<the test CA>`.
    pub fn admin_url(&self) -> String {
        let tls = self.ca.as_ref().map_or(String::new(), |ca| {
            format!("?sslmode=verify-full&sslrootcert={}", ca.display())
        });
        format!("postgres://postgres@127.0.0.1:{}/postgres{tls}", self.port)
    }

    /// Starts the cluster (again) and waits until it accepts connections.
    pub fn resume(&self) {
        let data = self.dir.join("data");
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -c port={} -c unix_socket_directories={}",
            self.port,
            self.dir.display()
        );
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-w",
                "-l",
                self.dir.join("log").to_str().unwrap(),
                "start",
            ],
        );
    }

    /// Freezes the cluster (SIGSTOP to the postmaster and every backend):
    /// connections stay open, nothing answers (a stalled disk or host).
    /// The postmaster stops first so it forks no backend the sweep misses.
    pub fn freeze(&self) {
        let postmaster = self.postmaster_pid();
        signal_pid("-STOP", &postmaster, true);
        for _ in 0..2 {
            for child in children_of(&postmaster) {
                signal_pid("-STOP", &child, false);
            }
        }
    }

    /// Resumes a frozen cluster (SIGCONT), backends before the postmaster:
    /// once it runs it reaps exited children, so a backend may vanish
    /// between listing and signalling (not an error).
    pub fn thaw(&self) {
        let postmaster = self.postmaster_pid();
        for child in children_of(&postmaster) {
            signal_pid("-CONT", &child, false);
        }
        signal_pid("-CONT", &postmaster, true);
    }

    fn postmaster_pid(&self) -> String {
        let pid_file = std::fs::read_to_string(self.dir.join("data/postmaster.pid")).unwrap();
        pid_file.lines().next().unwrap().trim().to_owned()
    }

    /// Stops it at once (`-m immediate`: connections cut, no checkpoint).
    pub fn stop(&self) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}

fn children_of(pid: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-P", pid])
        .output()
        .unwrap()
        .stdout;
    String::from_utf8(out)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Sends `which` to one process; `required` says its absence is a failure
/// (the postmaster) rather than a race with its exit (a backend).
fn signal_pid(which: &str, pid: &str, required: bool) {
    let out = std::process::Command::new("kill")
        .args([which, pid])
        .output()
        .unwrap();
    assert!(
        out.status.success() || !required,
        "kill {which} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap();
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            self.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A new service key (recorded for the log scan) and the SHA-256 a callers
/// file stores for it.
pub fn service_key() -> (String, String) {
    let (k, hash) = tessera_domain::callers::new_service_key();
    let k = String::from_utf8(k.expose().to_vec()).unwrap();
    record_secrets(std::slice::from_ref(&k));
    (k, hash)
}

/// `message`, presenting `key` as its caller's service key.
pub fn as_caller<T>(message: T, key: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}
