//! The real `tessera` binary: serve with flags, healthcheck, graceful stop.

use crate::harness::eventually;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use tessera_proto::v1::IssueRequest;
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;

pub const BIN: &str = env!("CARGO_BIN_EXE_tessera");

/// The address a started `tessera serve` announces on its first line.
fn listening(child: &mut std::process::Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim()
        .strip_prefix("tessera listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned()
}

fn healthcheck(addr: &str) -> bool {
    Command::new(BIN)
        .args(["healthcheck", "--endpoint", &format!("http://{addr}")])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_reports_health_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!(
        "tessera-bin-{}",
        tessera_domain::random_bytes(6)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let mut child = Command::new(BIN)
        .arg("serve")
        .env("TESSERA_LISTEN", "127.0.0.1:0")
        .env("TESSERA_DATA_DIR", &dir)
        .env_remove("TESSERA_KEK")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(&mut child);

    // The KEK file, the store (sealed keys, sessions) and its WAL were
    // created private.
    use std::os::unix::fs::PermissionsExt;
    for file in ["kek", "tessera.db", "tessera.db-wal"] {
        let mode = std::fs::metadata(dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}: {mode:o}");
    }

    // SERVING once the store answers (the first check runs at start).
    eventually("the healthcheck reports SERVING", || {
        let addr = addr.clone();
        async move { healthcheck(&addr) }
    })
    .await;

    let mut client = IssuerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let issued = client
        .issue(IssueRequest {
            subject: "bin-user".into(),
            audience: "api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!issued.access_token.is_empty());

    // The key commands of the CLI, against the running server.
    let keys = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("keys")
            .args(args)
            .args(["--endpoint", &format!("http://{addr}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let listed = keys(&["list"]);
    let mut states: Vec<_> = listed.iter().map(|k| k["state"].clone()).collect();
    states.sort_by_key(ToString::to_string);
    assert_eq!(
        states,
        ["KEY_STATE_ACTIVE", "KEY_STATE_PENDING"],
        "a signing key and its standby"
    );
    let rotated = keys(&["rotate"]);
    assert_eq!(rotated[0]["state"], "KEY_STATE_PENDING");
    let pending = rotated[0]["kid"].as_str().unwrap().to_owned();
    let killed = keys(&["compromise", &pending, "--reason", "drill"]);
    assert_eq!(killed[0]["compromised"], pending.as_str());
    assert_eq!(killed[0]["estimate"], true);
    let states: Vec<_> = keys(&["list"]).iter().map(|k| k["state"].clone()).collect();
    assert!(states.contains(&serde_json::json!("KEY_STATE_COMPROMISED")));

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || {
        let s = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        (s, stderr)
    })
    .await
    .unwrap();
    assert!(status.0.success(), "exit status {:?}", status.0);
    let logs = status.1;
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(
        logs.contains("production must supply its own"),
        "KEK warning"
    );
    // No credential in the logs.
    assert!(!logs.contains(&issued.access_token));
    assert!(!logs.contains(&issued.refresh_token));
    let kek = std::fs::read_to_string(dir.join("kek")).unwrap();
    assert!(!logs.contains(kek.trim()));
    // Into the suite-wide log scan too.
    if let Ok(path) = std::env::var("TESSERA_TEST_LOG") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        f.write_all(logs.as_bytes()).unwrap();
    }
    let url = format!("sqlite://{}", dir.join("tessera.db").display());
    crate::harness::record_secrets(&crate::harness::key_material(&dir, &url).await);
    assert!(!healthcheck(&addr), "nothing serves after the stop");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real binary, serving the deployment `d` (role all, on its database
/// and KEK file); its address.
pub(crate) fn serve(d: &crate::harness::Deployment) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--migrate"])
        .args(["--issuer", crate::harness::ISSUER])
        .args(["--database-url", d.database_url.as_deref().unwrap()])
        .arg("--data-dir")
        .arg(&d.data_dir)
        .arg("--kek-file")
        .arg(d.data_dir.join("kek"))
        .env("TESSERA_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(&mut child);
    (child, format!("http://{addr}"))
}

/// SIGKILL while 40 Refresh calls of one token are in flight, then a
/// restart: the family never forks — every successor handed out, before the
/// kill and after, is the same one, and the store holds at most one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_killed_mid_refresh_leaves_no_fork() {
    use tessera_proto::v1::RefreshRequest;
    let d = crate::harness::Deployment::new(crate::harness::Backend::Distributed).await;
    let (mut child, url) = serve(&d);
    let mut client = IssuerServiceClient::connect(url.clone()).await.unwrap();
    let issued = client
        .issue(IssueRequest {
            subject: "kill".into(),
            audience: "api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let refresh = |client: IssuerServiceClient<tonic::transport::Channel>, token: String| async move {
        let mut c = client;
        c.refresh(RefreshRequest {
            refresh_token: token,
            scopes: vec![],
        })
        .await
        .map(|r| r.into_inner().refresh_token)
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..40 {
        let (tx, c, t) = (tx.clone(), client.clone(), issued.refresh_token.clone());
        tokio::spawn(async move {
            let _ = tx.send(refresh(c, t).await);
        });
    }
    drop(tx);
    // Kill once the first call has answered: the others are in flight.
    let first = rx.recv().await.unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mut results = vec![first];
    while let Some(r) = rx.recv().await {
        results.push(r);
    }
    let mut successors: std::collections::HashSet<String> =
        results.into_iter().filter_map(Result::ok).collect();
    let answered = successors.len();
    let (mut child, url) = serve(&d);
    let client = IssuerServiceClient::connect(url).await.unwrap();
    // Within the grace window the same token replays its one rotation, or
    // rotates now if the kill came before any commit.
    let after = refresh(client, issued.refresh_token.clone()).await.unwrap();
    successors.insert(after);
    println!(
        "issuer killed mid-refresh: {answered} successor(s) answered before the kill, {} in all",
        successors.len()
    );
    assert_eq!(successors.len(), 1, "one successor, no fork");
    assert_eq!(
        d.count(
            "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = $1 AND generation = 1",
            &issued.family_id
        )
        .await,
        1
    );
    child.kill().unwrap();
    child.wait().unwrap();
    d.cleanup().await;
}

/// A fresh data directory under the system's temporary directory.
pub fn temp_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "tessera-{what}-{}",
        tessera_domain::random_bytes(6)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// `tessera serve` on the embedded store in `dir` with `args`; the child
/// and its address.
pub fn serve_embedded(dir: &std::path::Path, args: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("TESSERA_KEK")
        .env_remove("TESSERA_ISSUER")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening(&mut child);
    (child, addr)
}

/// SIGTERM, then the exit status must be success; its stderr.
pub async fn stop(mut child: std::process::Child) -> String {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    tokio::task::spawn_blocking(move || {
        let s = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(s.success(), "exit status {s:?}: {stderr}");
        stderr
    })
    .await
    .unwrap()
}

/// A free loopback port other than `not`.
fn free_port(not: u16) -> u16 {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port != not {
            return port;
        }
    }
}

/// Without --issuer, the first start's issuer (derived from its address)
/// is remembered in the data directory: a restart on another port still
/// verifies the tokens issued before. A later --issuer that disagrees wins,
/// with a warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_issuer_survives_a_restart_on_another_port() {
    use tessera_proto::v1::introspection_service_client::IntrospectionServiceClient;
    use tessera_proto::v1::{Consistency, TokenKind, VerifyFailure, VerifyRequest};
    let dir = temp_dir("issuer");
    let (first, addr) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let mut issuer = IssuerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let token = issuer
        .issue(IssueRequest {
            subject: "restart".into(),
            audience: "api".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    stop(first).await;
    let path = dir.join("issuer");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("http://{addr}\n")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let verify = |addr: String, token: String| async move {
        let mut c = IntrospectionServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let r = c
            .verify(VerifyRequest {
                token,
                expected_audience: "api".into(),
                expected_kind: TokenKind::Access.into(),
                consistency: Consistency::Default.into(),
            })
            .await
            .unwrap()
            .into_inner();
        (r.valid, r.failure(), r.claims.map(|c| c.issuer))
    };
    let port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    let other = format!("127.0.0.1:{}", free_port(port));
    let (second, addr2) = serve_embedded(&dir, &["--listen", &other]);
    assert_ne!(addr, addr2);
    assert_eq!(
        verify(addr2.clone(), token.clone()).await,
        (
            true,
            VerifyFailure::Unspecified,
            Some(format!("http://{addr}"))
        )
    );
    stop(second).await;

    // A disagreeing --issuer: it wins (tokens now carry it), with a warning
    // naming the file; the file keeps the first issuer.
    let (third, addr3) = serve_embedded(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--issuer",
            "https://auth.example",
        ],
    );
    assert_eq!(
        verify(addr3, token).await,
        (false, VerifyFailure::WrongIssuer, None)
    );
    let logs = stop(third).await;
    assert!(logs.contains("--issuer differs"), "{logs}");
    assert!(logs.contains(&path.display().to_string()), "{logs}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("http://{addr}\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGHUP reloads the callers file even when its modification time says
/// nothing changed (an editor or a config tool that keeps mtimes), and every
/// reload is in the audit trail (`--audit-log`). That the 2 s poll leaves
/// such a file alone is checked after proof that it looked: the TLS
/// certificate touched twice, each reload in the trail, the second one on a
/// poll that began after the callers file was rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_callers_file() {
    use crate::audit::{await_event, nth_event, trail};
    use serde_json::json;
    use std::time::Duration;
    let d = crate::harness::Deployment::new(crate::harness::Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let file = d.data_dir.join("callers.toml");
    let entry = |id: &str, hash: &str| {
        format!(
            "[[caller]]\nid = \"{id}\"\nkey_sha256 = [\"{hash}\"]\nrpcs = [\"Issue\"]\naudiences = [\"api\"]\n"
        )
    };
    let key = |_: ()| {
        let (k, h) = tessera_domain::callers::new_service_key();
        let k = String::from_utf8(k.expose().to_vec()).unwrap();
        crate::harness::record_secrets(std::slice::from_ref(&k));
        (k, h)
    };
    let ((old_key, old_hash), (new_key, new_hash)) = (key(()), key(()));
    std::fs::write(&file, entry("old", &old_hash)).unwrap();
    let pki = crate::pki::TestPki::generate();
    let (cert, tls_key) = (d.data_dir.join("server.pem"), d.data_dir.join("server.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &tls_key).unwrap();
    let audit_log = d.data_dir.join("audit.jsonl");
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(&d.data_dir)
            .arg("--callers-file")
            .arg(&file)
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&tls_key)
            .arg("--audit-log")
            .arg(&audit_log)
            .env("TESSERA_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let addr = listening(&mut child.0).parse().unwrap();
    let connect = || crate::edge::tls_channel(addr, &pki.ca, None);
    let client = IssuerServiceClient::new(connect().await.unwrap());
    let issue = |key: String| {
        let mut c = client.clone();
        async move {
            let mut r = tonic::Request::new(IssueRequest {
                subject: "hup".into(),
                audience: "api".into(),
                ..Default::default()
            });
            r.metadata_mut()
                .insert("authorization", format!("Bearer {key}").parse().unwrap());
            c.issue(r).await.map(drop).map_err(|s| s.code())
        }
    };
    let events = || trail(&audit_log);
    let reloads = || -> Vec<serde_json::Value> {
        events()
            .into_iter()
            .filter(|e| e["event"] == "callers_reloaded")
            .collect()
    };
    assert_eq!(issue(old_key.clone()).await, Ok(()));
    assert_eq!(
        issue(new_key.clone()).await,
        Err(tonic::Code::Unauthenticated)
    );

    // New content, same modification time (as `cp -p` or `rsync -a` leave
    // it): the change time, which nobody can set, and the size still say
    // it changed, so the poll reads it once settled.
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    std::fs::write(&file, entry("new", &new_hash)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), mtime);
    // The certificate touched (same bytes, a later mtime), twice: the poll
    // that reloads it the second time began after the first reload was
    // written, so after the rewrite above, and read the callers file first.
    let cert_mtime = std::fs::metadata(&cert).unwrap().modified().unwrap();
    for n in 1..=2 {
        std::fs::File::options()
            .write(true)
            .open(&cert)
            .unwrap()
            .set_modified(cert_mtime + Duration::from_secs(n))
            .unwrap();
        nth_event(events, n as usize, "tls_reloaded", &json!({"result": "ok"})).await;
    }
    let modified =
        json!({"caller": "tessera", "trigger": "modified", "result": "ok", "callers": 1});
    await_event(events, "callers_reloaded", &modified).await;
    assert_eq!(
        issue(new_key.clone()).await,
        Ok(()),
        "the rewrite with the old modification time is in force"
    );
    assert_eq!(reloads().len(), 1, "{:#?}", reloads());

    let hup = || {
        assert!(
            Command::new("kill")
                .args(["-HUP", &child.0.id().to_string()])
                .status()
                .unwrap()
                .success()
        );
    };
    assert_eq!(issue(old_key).await, Err(tonic::Code::Unauthenticated));
    // SIGHUP, nothing changed: read, found the same, left in force.
    let sighup = json!({"caller": "tessera", "trigger": "sighup", "callers": 1});
    hup();
    let mut want = sighup.clone();
    want["result"] = "unchanged".into();
    await_event(events, "callers_reloaded", &want).await;
    assert_eq!(issue(new_key.clone()).await, Ok(()));
    assert_eq!(reloads().len(), 2, "{:#?}", reloads());

    // A certificate that does not parse is refused; the one in force stays
    // (a new connection is served with it).
    let garbage = d.data_dir.join("server.pem.new");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    std::fs::rename(&garbage, &cert).unwrap();
    await_event(events, "tls_reloaded", &json!({"result": "rejected"})).await;
    let mut fresh = IssuerServiceClient::new(connect().await.expect("the certificate in force"));
    let mut r = tonic::Request::new(IssueRequest {
        subject: "hup".into(),
        audience: "api".into(),
        ..Default::default()
    });
    r.metadata_mut().insert(
        "authorization",
        format!("Bearer {new_key}").parse().unwrap(),
    );
    fresh.issue(r).await.unwrap();

    // Never the files' contents.
    let text = std::fs::read_to_string(&audit_log).unwrap();
    assert!(
        !text.contains(&new_hash)
            && !text.contains(&old_hash)
            && !text.contains("not a certificate"),
        "{text}"
    );
    drop(child);
    d.cleanup().await;
}

/// A server killed when dropped, so that a failing test leaves none behind
/// (holding the test's output open).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A healthcheck that could not ask says so (UNKNOWN, the reason on
/// stderr, exit 1), and never claims NOT_SERVING: nothing listening, and a
/// server whose callers file closes health refusing it as unauthenticated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthcheck_that_could_not_ask_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let ask = |addr: String| {
        Command::new(BIN)
            .args(["healthcheck", "--endpoint", &format!("http://{addr}")])
            .env_remove("TESSERA_SERVICE_KEY")
            .output()
            .unwrap()
    };
    let out = ask(addr.to_string());
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "UNKNOWN");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&addr.to_string()), "names the endpoint: {err}");

    let d = crate::harness::Deployment::new(crate::harness::Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let file = d.data_dir.join("callers.toml");
    std::fs::write(&file, "[access]\nhealth = \"caller\"\n").unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    let (app, stop, handle) = crate::harness::start_config(cfg).await;
    let addr = app.addr.to_string();
    let out = tokio::task::spawn_blocking(move || ask(addr))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "UNKNOWN");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

/// One process per embedded data directory: a second `serve` on it is
/// refused at start, naming the holder's PID, and never listens; after
/// the holder stops (or is killed: the kernel drops the lock) it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_one_data_directory_is_refused_with_the_holders_pid() {
    let dir = temp_dir("datadir-lock");
    let (first, _) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let holder = first.id();
    let second = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env_remove("TESSERA_KEK")
        .env_remove("TESSERA_ISSUER")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("in use by process {holder}")),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&second.stdout).contains("listening"),
        "the refused server listened"
    );
    stop(first).await;
    let (third, _) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let mut third = third;
    third.kill().unwrap();
    third.wait().unwrap();
    let (fourth, _) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    stop(fourth).await;
    let _ = std::fs::remove_dir_all(&dir);
}
