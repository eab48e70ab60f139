//! The CLI always says why (issue 20): the real binary against servers it
//! starts. A healthcheck that cannot ask names the cause and its fix (TLS
//! mismatches both ways, a CA that does not sign the certificate); `keys
//! rotate` and `migrate` say what they did or that nothing was due;
//! `keys rewrap` on the embedded store refuses while a server holds it and
//! replaces the store's KEK; `callers add --key-file` writes 0600;
//! `--version`, completions and the man page; and an exporter that cannot
//! reach its collector is logged, once per kind per minute.

use crate::binary::{BIN, serve_embedded, stop, temp_dir};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

/// A server killed if the test fails before it stops it (a panic must not
/// leave it running).
struct Running(Option<std::process::Child>);

impl Running {
    async fn stop(mut self) -> String {
        stop(self.0.take().unwrap()).await
    }

    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("TESSERA_SERVICE_KEY")
        .env_remove("TESSERA_ENDPOINT")
        .env_remove("TESSERA_AUDIT_LOG")
        .env_remove("TESSERA_DATABASE_URL")
        .output()
        .unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// UNKNOWN, exit 1, and stderr holding every one of `words`.
fn unknown_because(args: &[&str], words: &[&str]) {
    let o = run(args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
    assert_eq!(out(&o).trim(), "UNKNOWN", "{args:?}");
    for w in words {
        assert!(err(&o).contains(w), "{args:?}: {w:?} not in {}", err(&o));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthcheck_names_tls_mismatches_and_their_fix() {
    let pki = crate::pki::TestPki::generate();
    let dir = temp_dir("cli-tls");
    let cert = pki.server_cert.to_str().unwrap();
    let key = pki.server_key.to_str().unwrap();
    let (tls, tls_addr) = serve_embedded(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            cert,
            "--tls-key",
            key,
        ],
    );
    let tls = Running(Some(tls));
    let port = tls_addr.rsplit(':').next().unwrap();
    let ca = pki.ca.to_str().unwrap();
    let other_ca = pki.other_ca.to_str().unwrap();
    let https = format!("https://localhost:{port}");
    // The right CA: SERVING.
    let o = run(&["healthcheck", "--endpoint", &https, "--peer-ca-file", ca]);
    assert_eq!(out(&o).trim(), "SERVING", "{}", err(&o));
    // Plain HTTP to the TLS port.
    unknown_because(
        &["healthcheck", "--endpoint", &format!("http://{tls_addr}")],
        &["may serve TLS", "https://", "--peer-ca-file"],
    );
    // A CA that does not sign the server's certificate.
    unknown_because(
        &[
            "healthcheck",
            "--endpoint",
            &https,
            "--peer-ca-file",
            other_ca,
        ],
        &["--peer-ca-file does not sign the certificate"],
    );
    // https:// without a CA.
    unknown_because(&["healthcheck", "--endpoint", &https], &["--peer-ca-file"]);
    tls.stop().await;

    // https:// to a plain port.
    let plain_dir = temp_dir("cli-plain");
    let (plain, plain_addr) = serve_embedded(&plain_dir, &["--listen", "127.0.0.1:0"]);
    let plain = Running(Some(plain));
    let port = plain_addr.rsplit(':').next().unwrap();
    unknown_because(
        &[
            "healthcheck",
            "--endpoint",
            &format!("https://localhost:{port}"),
            "--peer-ca-file",
            ca,
        ],
        &["TLS failed", "http://"],
    );

    // `keys rotate` says what it did, and that nothing was due.
    let endpoint = format!("http://{plain_addr}");
    let first = run(&["keys", "rotate", "--endpoint", &endpoint]);
    assert!(first.status.success(), "{}", err(&first));
    assert!(err(&first).contains("key(s) changed"), "{}", err(&first));
    let second = run(&["keys", "rotate", "--endpoint", &endpoint]);
    assert!(second.status.success(), "{}", err(&second));
    assert!(err(&second).contains("nothing was due"), "{}", err(&second));
    assert!(out(&second).is_empty(), "{}", out(&second));
    plain.stop().await;
    for d in [dir, plain_dir] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// `healthcheck --wait` keeps asking until a server that starts later is
/// SERVING (exit 0), and when nothing ever answers it gives up at the
/// bound with UNKNOWN and the reason (exit 1), never spinning on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_wait_follows_a_starting_server_and_gives_up_with_the_reason() {
    let port = crate::harness::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let waiting = Command::new(BIN)
        .args(["healthcheck", "--endpoint", &endpoint, "--wait", "60"])
        .env_remove("TESSERA_SERVICE_KEY")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let dir = temp_dir("cli-wait");
    let listen = format!("127.0.0.1:{port}");
    let (server, _) = serve_embedded(&dir, &["--listen", &listen]);
    let server = Running(Some(server));
    let o = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));
    assert_eq!(out(&o).trim(), "SERVING");
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);

    let nothing = format!("http://127.0.0.1:{}", crate::harness::free_port());
    unknown_because(
        &["healthcheck", "--endpoint", &nothing, "--wait", "1"],
        &["is a server listening"],
    );
}

/// `migrate` says how many migrations it applied, then that none was due,
/// with no log line from the database on the rerun; the SQLite file it
/// creates is 0600.
#[test]
fn migrate_says_what_it_applied_then_that_nothing_was_due() {
    let dir = temp_dir("cli-migrate");
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}?mode=rwc", dir.join("m.db").display());
    let o = run(&["migrate", "--database-url", &url]);
    assert!(o.status.success(), "{}", err(&o));
    assert!(out(&o).starts_with("migrate: applied "), "{}", out(&o));
    // The file it created holds sealed keys and sessions: this user's only.
    let mode = std::fs::metadata(dir.join("m.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let o = run(&["migrate", "--database-url", &url]);
    assert!(o.status.success(), "{}", err(&o));
    assert_eq!(
        out(&o).trim(),
        "migrate: nothing to apply: the schema is up to date"
    );
    assert!(err(&o).is_empty(), "{}", err(&o));
    let _ = std::fs::remove_dir_all(dir);
}

/// The embedded KEK rotation: refused while the server holds the data
/// directory (naming its PID); with the server stopped, every key is
/// re-sealed, `<data-dir>/kek` becomes the new KEK (0600), the audit event
/// goes once to the file given, and the server starts again with the same
/// keys and no flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_kek_rotation_replaces_the_stores_kek() {
    let dir = temp_dir("cli-rewrap");
    let (server, addr) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let server = Running(Some(server));
    let endpoint = format!("http://{addr}");
    let before = out(&run(&["keys", "list", "--endpoint", &endpoint]));
    let new_kek = dir.with_extension("kek.new");
    std::fs::write(
        &new_kek,
        tessera_domain::b64url_encode(tessera_domain::random_bytes(32)),
    )
    .unwrap();
    std::fs::set_permissions(&new_kek, std::fs::Permissions::from_mode(0o600)).unwrap();
    let audit = dir.with_extension("audit.log");
    let data = dir.to_str().unwrap();
    let (new, audit_s) = (new_kek.to_str().unwrap(), audit.to_str().unwrap());
    let args = [
        "keys",
        "rewrap",
        "--data-dir",
        data,
        "--new-kek-file",
        new,
        "--audit-log",
        audit_s,
    ];
    let refused = run(&args);
    assert!(!refused.status.success());
    assert!(
        err(&refused).contains(&format!("in use by process {}", server.id())),
        "{}",
        err(&refused)
    );
    let old_kek = std::fs::read_to_string(dir.join("kek")).unwrap();
    server.stop().await;
    let o = run(&args);
    assert!(o.status.success(), "{}", err(&o));
    let moved: serde_json::Value = serde_json::from_str(out(&o).trim()).unwrap();
    assert!(moved["rewrapped"].as_u64().unwrap() >= 2, "{moved}");
    let kek = std::fs::read_to_string(dir.join("kek")).unwrap();
    assert_ne!(kek.trim(), old_kek.trim());
    assert_eq!(
        tessera::kek::parse_kek(&kek).unwrap().expose(),
        tessera::kek::parse_kek(&std::fs::read_to_string(&new_kek).unwrap())
            .unwrap()
            .expose()
    );
    let mode = std::fs::metadata(dir.join("kek"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let trail = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(trail.matches("\"keys_rewrapped\"").count(), 1, "{trail}");
    let (again, addr) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let again = Running(Some(again));
    let after = out(&run(&[
        "keys",
        "list",
        "--endpoint",
        &format!("http://{addr}"),
    ]));
    assert_eq!(after, before, "the same keys, opened under the new KEK");
    again.stop().await;
    for p in [new_kek, audit] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// `callers add --key-file` writes the key 0600 (never over a file) and
/// prints only the entry.
#[test]
fn callers_add_writes_its_key_file_0600() {
    let dir = temp_dir("cli-callers");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("app.key");
    let path = file.to_str().unwrap();
    let o = run(&[
        "callers",
        "add",
        "app",
        "--rpcs",
        "Verify",
        "--key-file",
        path,
    ]);
    assert!(o.status.success(), "{}", err(&o));
    let key = std::fs::read_to_string(&file).unwrap();
    crate::harness::record_secrets(&[key.trim().to_owned()]);
    assert!(key.starts_with("tsk_"));
    assert!(!out(&o).contains(key.trim()), "the key was printed too");
    assert!(out(&o).contains("[[caller]]"));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // Recorded once in the audit sink it is given, by hash only; a refused
    // --key-file (nothing made) is not recorded.
    let audit = dir.join("audit.log");
    let again = Command::new(BIN)
        .args([
            "callers",
            "add",
            "app",
            "--rpcs",
            "Verify",
            "--key-file",
            path,
        ])
        .env("TESSERA_AUDIT_LOG", &audit)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), key, "overwritten");
    assert_eq!(std::fs::read_to_string(&audit).unwrap_or_default(), "");
    let o = Command::new(BIN)
        .args(["callers", "add", "billing", "--rpcs", "Verify"])
        .env("TESSERA_AUDIT_LOG", &audit)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", err(&o));
    let billing_key = out(&o)
        .lines()
        .find(|l| l.starts_with("tsk_"))
        .unwrap()
        .to_owned();
    crate::harness::record_secrets(std::slice::from_ref(&billing_key));
    let trail = std::fs::read_to_string(&audit).unwrap();
    assert_eq!(trail.lines().count(), 1, "{trail}");
    let event: serde_json::Value = serde_json::from_str(trail.trim()).unwrap();
    assert_eq!(
        (&event["event"], &event["caller"], &event["id"]),
        (&"caller_key_made".into(), &"cli".into(), &"billing".into())
    );
    assert!(out(&o).contains(event["key_sha256"].as_str().unwrap()));
    assert!(!trail.contains(&billing_key), "the key in the audit trail");
    let _ = std::fs::remove_dir_all(dir);
}

/// `--version` names the commit; completions and the man page are the
/// binary's own.
#[test]
fn version_completions_and_man_page() {
    let v = out(&run(&["--version"]));
    assert!(v.starts_with("tessera ") && v.contains("(commit "), "{v}");
    assert!(!v.contains("commit unknown"), "built from git, yet: {v}");
    let bash = out(&run(&["completions", "bash"]));
    assert!(
        bash.contains("_tessera()") && bash.contains("healthcheck"),
        "{bash}"
    );
    let man = out(&run(&["man"]));
    assert!(man.contains(".TH tessera 1") && man.contains("healthcheck"));
    let dir = temp_dir("cli-man");
    let o = run(&["man", "--dir", dir.to_str().unwrap()]);
    assert!(o.status.success(), "{}", err(&o));
    for page in ["tessera.1", "tessera-serve.1", "tessera-keys.1"] {
        assert!(dir.join(page).exists(), "{page}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

/// A collector that is not there: the export failures are logged (they
/// used to vanish), each kind at most once a minute, not once per export.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_export_failures_are_logged_once_per_kind() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let collector = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = temp_dir("cli-otel");
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)
        .env("OTEL_METRIC_EXPORT_INTERVAL", "200")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env_remove("TESSERA_KEK")
        .env_remove("TESSERA_ISSUER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    // Spans to export: a few calls.
    for _ in 0..5 {
        let _ = run(&["healthcheck", "--endpoint", &format!("http://{addr}")]);
        let _ = run(&["keys", "list", "--endpoint", &format!("http://{addr}")]);
    }
    // About 15 metric exports fail meanwhile (one per 200 ms).
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let stderr = stop(child).await;
    let failures: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("opentelemetry") && (l.contains("WARN") || l.contains("ERROR")))
        .collect();
    assert!(
        failures.iter().any(|l| l.contains("Export")),
        "no export failure logged:\n{stderr}"
    );
    let mut kinds: Vec<&str> = failures
        .iter()
        .filter_map(|l| l.split("name=").nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap_or(""))
        .collect();
    let logged = kinds.len();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(logged, kinds.len(), "a kind was logged twice:\n{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}

/// A server on a shared store leaves its working directory alone: no
/// `tessera-data` is made (it needs none; the KEK is given).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_store_makes_no_data_directory() {
    use crate::harness::{Backend, Deployment, ISSUER};
    let d = Deployment::new(Backend::Distributed).await;
    let cwd = temp_dir("cli-cwd");
    std::fs::create_dir_all(&cwd).unwrap();
    let mut child = Command::new(BIN)
        .current_dir(&cwd)
        .args(["serve", "--listen", "127.0.0.1:0", "--migrate"])
        .args(["--issuer", ISSUER])
        .args(["--database-url", d.database_url.as_deref().unwrap()])
        .arg("--kek-file")
        .arg(d.data_dir.join("kek"))
        .env_remove("TESSERA_DATA_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.starts_with("tessera listening on "), "{line}");
    stop(child).await;
    let left: Vec<_> = std::fs::read_dir(&cwd)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        left.is_empty(),
        "the server wrote {left:?} into its working directory"
    );
    let _ = std::fs::remove_dir_all(cwd);
    d.cleanup().await;
}

/// A port that accepts and never answers (a black-holing firewall, a
/// stalled TLS handshake): the commands that ask a server give up with the
/// reason, never hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_that_never_answers_is_an_error_not_a_hang() {
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = hole.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hole.incoming().flatten() {
            held.push(c);
        }
    });
    let pki = crate::pki::TestPki::generate();
    let ca = pki.ca.to_str().unwrap().to_owned();
    let plain = format!("http://{addr}");
    let tls = format!("https://localhost:{}", addr.port());
    let calls = [
        vec!["keys", "list", "--endpoint", &plain],
        vec!["keys", "list", "--endpoint", &tls, "--peer-ca-file", &ca],
        vec![
            "revoke",
            "--family",
            "f",
            "--endpoint",
            &tls,
            "--peer-ca-file",
            &ca,
        ],
    ]
    .map(|args| {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&args)
        })
    });
    for call in calls {
        let o = call.await.unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", err(&o));
        assert!(err(&o).contains("within"), "{}", err(&o));
    }
}

/// One server per SQLite file however it is named: a second `serve` given
/// the first one's file as a `sqlite:` URL is refused naming the holder, and
/// so is a `keys rewrap` of that file, even with the old KEK named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_url_to_a_served_store_is_refused() {
    let dir = temp_dir("cli-sqlite-url");
    let (server, _) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let server = Running(Some(server));
    let url = format!("sqlite://{}", dir.join("tessera.db").display());
    let kek = dir.join("kek");
    let second = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .args(["--issuer", "https://auth.example.com", "--kek-file"])
        .arg(&kek)
        .output()
        .unwrap();
    let holder = format!("in use by process {}", server.id());
    assert!(!second.status.success(), "{}", err(&second));
    assert!(err(&second).contains(&holder), "{}", err(&second));
    let new_kek = dir.with_extension("kek.new");
    std::fs::write(
        &new_kek,
        tessera_domain::b64url_encode(tessera_domain::random_bytes(32)),
    )
    .unwrap();
    let rewrap = run(&[
        "keys",
        "rewrap",
        "--database-url",
        &url,
        "--old-kek-file",
        kek.to_str().unwrap(),
        "--new-kek-file",
        new_kek.to_str().unwrap(),
    ]);
    assert!(!rewrap.status.success(), "{}", out(&rewrap));
    assert!(err(&rewrap).contains(&holder), "{}", err(&rewrap));
    server.stop().await;
    let _ = std::fs::remove_file(new_kek);
    let _ = std::fs::remove_dir_all(dir);
}

/// What the CLI is given is what it uses, or it says why not: two service
/// keys, an empty key, an endpoint without a scheme or with a path, a CA
/// beside http://. None of these reaches a server.
#[test]
fn ambiguous_or_ignored_cli_settings_are_refused() {
    let dir = temp_dir("cli-settings");
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("k");
    std::fs::write(&key, "tsk_x\n").unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let ask = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(BIN);
        c.args(["keys", "list"])
            .args(args)
            .env_remove("TESSERA_SERVICE_KEY");
        c.env_remove("TESSERA_SERVICE_KEY_FILE")
            .env_remove("TESSERA_ENDPOINT");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", err(&o));
        err(&o)
    };
    let k = key.to_str().unwrap();
    let e = ask(
        &["--service-key-file", k],
        &[("TESSERA_SERVICE_KEY", "tsk_y")],
    );
    assert!(e.contains("given twice"), "{e}");
    let e = ask(&["--service-key-file", empty.to_str().unwrap()], &[]);
    assert!(e.contains("service key is empty"), "{e}");
    let e = ask(&[], &[("TESSERA_SERVICE_KEY", "")]);
    assert!(e.contains("service key is empty"), "{e}");
    let e = ask(&["--endpoint", "127.0.0.1:1"], &[]);
    assert!(e.contains("needs a scheme"), "{e}");
    let e = ask(&["--endpoint", "http://127.0.0.1:1/tessera"], &[]);
    assert!(e.contains("no path"), "{e}");
    let e = ask(
        &["--endpoint", "http://127.0.0.1:1", "--peer-ca-file", k],
        &[],
    );
    assert!(
        e.contains("--peer-ca-file is for an https:// endpoint"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
