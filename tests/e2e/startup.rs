//! The real binary refusing to start: each refusal names the setting, its
//! value (never a password) and the cause, is printed once as a
//! `tessera: …` line, and comes at once (a closed port is "connection
//! refused", not a pool timeout). And the log formats: `--log-format json`
//! writes JSON lines, and a redirected log carries no colour codes.

use crate::binary::{BIN, serve_embedded, stop, temp_dir};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The password every database URL here carries; no message may echo it.
const PASSWORD: &str = "s3cret-Startup-42";

/// A generous bound on a refusal: it should take well under a second, and
/// a pool timeout or a hung connection would take longer than this.
const FAST: Duration = Duration::from_secs(10);

/// `tessera serve ARGS` with a KEK and an issuer (a shared database needs
/// both) and logs at `info`; it must exit within [`FAST`]. Its exit code
/// and stderr.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let kek = tessera_domain::b64url_encode(tessera_domain::random_bytes(32));
    let mut child = Command::new(BIN)
        .args(["serve", "--issuer", "https://auth.example"])
        .args(args)
        .env("TESSERA_KEK", kek)
        .env("TESSERA_LOG", "info")
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > FAST {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("`tessera serve {args:?}` still running after {FAST:?}: a refusal must be fast");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    (status.code(), stderr)
}

/// The one `tessera: …` line of a refusal, after checking: exit code 1,
/// exactly one such line, no ERROR log line repeating it, and no password.
fn the_refusal((code, stderr): (Option<i32>, String)) -> String {
    assert_eq!(code, Some(1), "{stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("tessera: "))
        .collect();
    assert_eq!(lines.len(), 1, "one `tessera:` line: {stderr}");
    assert!(
        !stderr.contains("ERROR"),
        "printed once, not also logged: {stderr}"
    );
    assert!(!stderr.contains(PASSWORD), "no password: {stderr}");
    lines[0].to_owned()
}

/// The test Postgres's URL with database `db`, and a password in it (the
/// test server's own when it has one: it is checked first).
fn postgres_url(db: &str) -> (String, String) {
    let admin = crate::harness::admin_database_url();
    let (scheme, rest) = admin.split_once("://").unwrap();
    let (info, rest) = rest.split_once('@').unwrap();
    let host = rest.split(['/', '?']).next().unwrap();
    let (user, password) = match info.split_once(':') {
        Some((u, p)) => (u.to_owned(), p.to_owned()),
        None => (info.to_owned(), PASSWORD.to_owned()),
    };
    (
        format!("{scheme}://{user}:{password}@{host}/{db}"),
        password,
    )
}

fn random_name(what: &str) -> String {
    let suffix: String = tessera_domain::random_bytes(6)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("tessera_{what}_{suffix}")
}

#[test]
fn a_missing_database_says_to_create_it() {
    let db = random_name("nodb");
    let (url, password) = postgres_url(&db);
    let out = refused(&["--listen", "127.0.0.1:0", "--database-url", &url]);
    assert!(!out.1.contains(&password), "{}", out.1);
    let line = the_refusal(out);
    assert!(line.contains("database_url postgres://"), "{line}");
    assert!(
        line.contains(&format!("database \"{db}\" does not exist")),
        "{line}"
    );
    assert!(
        line.contains("3D000") && line.contains("createdb"),
        "{line}"
    );
    assert!(line.contains("tessera migrate"), "{line}");
}

#[test]
fn an_unknown_role_is_named() {
    let role = random_name("norole");
    let (url, password) = postgres_url("postgres");
    let user = url.split("://").nth(1).unwrap().split(':').next().unwrap();
    let url = url.replacen(&format!("://{user}:"), &format!("://{role}:"), 1);
    let out = refused(&["--listen", "127.0.0.1:0", "--database-url", &url]);
    assert!(!out.1.contains(&password), "{}", out.1);
    let line = the_refusal(out);
    assert!(
        line.contains(&format!("database_url postgres://{role}@")),
        "{line}"
    );
    // Trust authentication says the role does not exist (28000); password
    // authentication does not tell (28P01).
    assert!(
        line.contains(&format!("role \"{role}\" does not exist")) && line.contains("28000")
            || line.contains("28P01") && line.contains("check the password"),
        "{line}"
    );
}

#[test]
fn a_closed_port_is_refused_at_once() {
    let port = crate::harness::free_port();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{port}/tessera");
    let line = the_refusal(refused(&[
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
    ]));
    assert!(
        line.contains(&format!(
            "database_url postgres://postgres@127.0.0.1:{port}/tessera"
        )),
        "{line}"
    );
    assert!(line.contains("connection refused"), "{line}");
    assert!(!line.contains("pool timed out"), "{line}");

    // Redis the same way (on the embedded store, which opens first).
    let dir = temp_dir("redis-closed");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{port}");
    let line = the_refusal(refused(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        dir.to_str().unwrap(),
        "--redis-url",
        &url,
    ]));
    assert!(
        line.contains(&format!("redis_url redis://127.0.0.1:{port}"))
            && line.contains("connection refused"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_taken_port_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = temp_dir("taken");
    let line = the_refusal(refused(&[
        "--listen",
        &addr,
        "--data-dir",
        dir.to_str().unwrap(),
    ]));
    assert!(line.contains(&format!("listen {addr}")), "{line}");
    assert!(line.contains("address already in use"), "{line}");
    assert!(line.contains("another process listens there"), "{line}");
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A port held by an outgoing connection (the kernel gave it as the
/// connection's ephemeral local port) refuses the bind though nothing
/// listens there: the refusal says so and names the reservation, instead of
/// sending the operator to look for a listener that does not exist.
#[test]
fn a_port_held_by_an_outgoing_connection_is_told_apart() {
    let peer = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let outgoing = std::net::TcpStream::connect(peer.local_addr().unwrap()).unwrap();
    let addr = outgoing.local_addr().unwrap();
    let dir = temp_dir("ephemeral");
    let line = the_refusal(refused(&[
        "--listen",
        &addr.to_string(),
        "--data-dir",
        dir.to_str().unwrap(),
    ]));
    assert!(line.contains(&format!("listen {addr}")), "{line}");
    assert!(line.contains("nothing listens there"), "{line}");
    assert!(
        line.contains(&format!("ip_local_reserved_ports={}", addr.port())),
        "{line}"
    );
    drop(outgoing);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A grace window shorter than the request timeout plus a retry would turn
/// a Refresh retried after an unknown outcome into reuse: refused at start,
/// naming the setting and both ways out; 0 (no replay) and a long enough
/// window are accepted.
#[test]
fn a_grace_window_shorter_than_a_retry_is_refused() {
    let dir = temp_dir("grace");
    let d = dir.to_str().unwrap();
    let line = the_refusal(refused(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d,
        "--refresh-grace",
        "5",
    ]));
    assert!(line.contains("refresh_grace: 5 s"), "{line}");
    assert!(
        line.contains("--refresh-grace") && line.contains("15"),
        "{line}"
    );
    let line = the_refusal(refused(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d,
        "--refresh-grace",
        "20",
        "--request-timeout-ms",
        "30000",
    ]));
    assert!(
        line.contains("shorter than the request timeout (30 s)"),
        "{line}"
    );
    // A timeout no grace can cover names the timeout to lower.
    let line = the_refusal(refused(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d,
        "--request-timeout-ms",
        "100000",
    ]));
    assert!(
        line.contains("lower --request-timeout-ms to at most 55000"),
        "{line}"
    );
    // A lock timeout the statement timeout would always pre-empt.
    let line = the_refusal(refused(&[
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        d,
        "--pg-lock-timeout-ms",
        "5000",
        "--pg-statement-timeout-ms",
        "2000",
    ]));
    assert!(
        line.contains("pg_lock_timeout_ms: 5000 ms is not below"),
        "{line}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_that_is_a_file_is_named() {
    let file = temp_dir("file");
    std::fs::write(&file, "not a directory").unwrap();
    let path = file.to_str().unwrap();
    let line = the_refusal(refused(&["--listen", "127.0.0.1:0", "--data-dir", path]));
    assert!(line.contains(&format!("data_dir {path}")), "{line}");
    assert!(line.contains("is not a directory"), "{line}");
    // A data dir under that file cannot be made either.
    let under = format!("{path}/data");
    let line = the_refusal(refused(&["--listen", "127.0.0.1:0", "--data-dir", &under]));
    assert!(line.contains(&format!("data_dir {under}")), "{line}");
    assert!(line.contains("is a file, not a directory"), "{line}");
    std::fs::remove_file(&file).unwrap();
}

/// A wildcard listen with no issuer is refused before anything is made:
/// no data directory, no database, no KEK left behind by a start that
/// could never succeed.
#[test]
fn a_wildcard_without_an_issuer_is_refused_before_the_data_dir_is_made() {
    let dir = temp_dir("wildcard");
    let o = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--allow-insecure-listen"])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("TESSERA_ISSUER")
        .env_remove("TESSERA_KEK")
        .env_remove("TESSERA_DATABASE_URL")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--issuer") && stderr.contains("names no host"),
        "{stderr}"
    );
    assert!(!dir.exists(), "a refused start made {}", dir.display());
}

/// SQLite's "cannot open" (code 14) names the file. A database path that
/// is a directory gives it even to root.
#[test]
fn an_unopenable_sqlite_file_is_named() {
    let dir = temp_dir("cantopen");
    let db = dir.join("tessera.db");
    std::fs::create_dir_all(&db).unwrap();
    let path = dir.to_str().unwrap();
    let line = the_refusal(refused(&["--listen", "127.0.0.1:0", "--data-dir", path]));
    assert!(line.contains(&format!("data_dir {path}")), "{line}");
    assert!(
        line.contains(&format!("cannot open the SQLite file {}", db.display()))
            && line.contains("code 14")
            && line.contains("writable"),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A data directory this user cannot write. Root writes anywhere (the
/// permission bits do not bind it), so under root — as in the CI container
/// — the case cannot arise and is skipped; the directory case above covers
/// the same SQLite error.
#[test]
fn an_unwritable_data_dir_is_named() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp_dir("readonly");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o500)).unwrap();
    if std::fs::write(dir.join("probe"), "").is_ok() {
        eprintln!("skipped: this user writes into a 0500 directory (root)");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let path = dir.to_str().unwrap();
    let line = the_refusal(refused(&["--listen", "127.0.0.1:0", "--data-dir", path]));
    assert!(line.contains(&format!("data_dir {path}")), "{line}");
    assert!(line.contains("writable"), "{line}");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--log-format json`: every stderr line is a JSON object (the log lines
/// and the audit lines alike); the default text log, redirected, has no
/// ANSI escape codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_json_on_request_and_plain_when_redirected() {
    let dir = temp_dir("logjson");
    let (child, _) = serve_embedded(&dir, &["--listen", "127.0.0.1:0", "--log-format", "json"]);
    let logs = stop(child).await;
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let serving = lines
        .iter()
        .find(|l| l["fields"]["message"] == "serving")
        .unwrap_or_else(|| panic!("a `serving` log line: {logs}"));
    assert_eq!(serving["level"], "INFO", "{serving}");
    assert!(serving["fields"]["addr"].is_string(), "{serving}");
    assert!(!logs.contains('\u{1b}'), "{logs}");

    let (child, _) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let logs = stop(child).await;
    assert!(logs.contains("INFO") && logs.contains("serving"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "escape codes in a redirected log: {logs:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs one administrative statement (no bound values: DDL takes none).
async fn admin_sql(conn: &mut sqlx::PgConnection, sql: String) {
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(conn)
        .await
        .unwrap();
}

/// `tessera migrate` as a role that may not create tables: the SQLSTATE
/// (42501) is named with the grant to give, not "migration failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_rights_is_told_what_to_grant() {
    use sqlx::Connection as _;
    let (role, db) = (random_name("noperm"), random_name("nopermdb"));
    let admin = crate::harness::admin_database_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
    admin_sql(
        &mut conn,
        format!("CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'"),
    )
    .await;
    admin_sql(&mut conn, format!("CREATE DATABASE {db}")).await;
    // Postgres 15 and later refuse it by default; older ones need telling.
    let (db_url, _) = postgres_url(&db);
    let mut in_db = sqlx::PgConnection::connect(&db_url).await.unwrap();
    admin_sql(
        &mut in_db,
        "REVOKE CREATE ON SCHEMA public FROM PUBLIC".into(),
    )
    .await;
    in_db.close().await.unwrap();

    let user = db_url
        .split("://")
        .nth(1)
        .unwrap()
        .split(':')
        .next()
        .unwrap();
    let (_, admin_password) = postgres_url(&db);
    let url = db_url.replacen(
        &format!("://{user}:{admin_password}@"),
        &format!("://{role}:{PASSWORD}@"),
        1,
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["migrate", "--database-url", &url])
            .env_remove("TESSERA_DATABASE_URL")
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(FAST, out)
        .await
        .expect("`tessera migrate` must refuse within 10 s")
        .unwrap();
    let line = the_refusal((out.status.code(), String::from_utf8(out.stderr).unwrap()));
    assert!(
        line.contains(&format!("database_url postgres://{role}@")),
        "{line}"
    );
    assert!(
        line.contains("migration failed")
            && line.contains("42501")
            && line.contains(&format!("GRANT CREATE ON SCHEMA public TO {role}")),
        "{line}"
    );
    admin_sql(&mut conn, format!("DROP DATABASE {db}")).await;
    admin_sql(&mut conn, format!("DROP ROLE {role}")).await;
}
