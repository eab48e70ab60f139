//! The operator CLI, the real binary against a real server the test starts:
//! `revoke` (every target), `token inspect` (locally and with the server's
//! Verify), `keys` and `healthcheck` presenting a service key to a server
//! with a callers file, `migrate`, `--help` and the exit codes.

use crate::binary::{BIN, serve_embedded, stop, temp_dir};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use tessera_proto::v1::IssueRequest;
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;

/// Runs `tessera ARGS` with `env`, feeding `stdin`.
fn tessera(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("TESSERA_SERVICE_KEY")
        .env_remove("TESSERA_ENDPOINT")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Exit code `code`; stdout as text.
fn expect(o: &Output, code: i32) -> String {
    assert_eq!(o.status.code(), Some(code), "{}", text(o));
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The JSON line a `revoke` prints.
fn revoked(o: &Output) -> serde_json::Value {
    serde_json::from_str(expect(o, 0).trim()).unwrap()
}

/// A callers file with one all-powerful operator (and health closed, so
/// `healthcheck` needs the key too); the key.
fn operator_callers(dir: &std::path::Path) -> (std::path::PathBuf, String) {
    let (key, hash) = tessera_domain::callers::new_service_key();
    let key = String::from_utf8(key.expose().to_vec()).unwrap();
    crate::harness::record_secrets(std::slice::from_ref(&key));
    std::fs::create_dir_all(dir).unwrap();
    let file = dir.join("callers.toml");
    std::fs::write(
        &file,
        format!(
            "[access]\nhealth = \"caller\"\n\n[[caller]]\nid = \"ops\"\nkey_sha256 = [\"{hash}\"]\n\
             rpcs = [\"Issue\", \"Refresh\", \"Revoke\", \"Verify\"]\naudiences = [\"*\"]\n\
             revoke = [\"jti\", \"family\", \"subject\", \"kid\"]\nkeys_admin = true\n"
        ),
    )
    .unwrap();
    (file, key)
}

async fn issue(url: &str, key: Option<&str>, subject: &str) -> tessera_proto::v1::IssueResponse {
    let mut client = IssuerServiceClient::connect(url.to_owned()).await.unwrap();
    let mut r = tonic::Request::new(IssueRequest {
        subject: subject.into(),
        audience: "orders-api".into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    });
    if let Some(k) = key {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {k}").parse().unwrap());
    }
    client.issue(r).await.unwrap().into_inner()
}

/// Revoke by every target, keys and healthcheck, all presenting the
/// service key (from the environment or a file) to a server that admits
/// only known callers; without it, a clear refusal and exit 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_keys_and_healthcheck_present_the_service_key() {
    let dir = temp_dir("ops");
    let (callers, key) = operator_callers(&dir);
    let key_file = dir.join("ops.key");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    let key_file = key_file.to_str().unwrap();
    let (server, addr) = serve_embedded(
        &dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--callers-file",
            callers.to_str().unwrap(),
        ],
    );
    let url = format!("http://{addr}");
    let ep = ["--endpoint", url.as_str()];
    let with_key = [("TESSERA_SERVICE_KEY", key.as_str())];

    // No key: UNAUTHENTICATED, with the fix named; exit 1.
    for args in [
        &["keys", "list"][..],
        &["revoke", "--subject", "x"],
        &["healthcheck"],
    ] {
        let o = tessera(&[args, &ep[..]].concat(), &[], "");
        let out = expect(&o, 1);
        if args[0] != "healthcheck" {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("Unauthenticated") && err.contains("TESSERA_SERVICE_KEY"),
                "{err}"
            );
        } else {
            // Refused, it could not ask: no answer, not NOT_SERVING.
            assert_eq!(out.trim(), "UNKNOWN");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("Unauthenticated"), "{err}");
        }
    }
    crate::harness::eventually("healthcheck with the key file says SERVING", || async {
        let o = tessera(
            &[
                "healthcheck",
                "--service-key-file",
                key_file,
                "--endpoint",
                &url,
            ],
            &[],
            "",
        );
        o.status.code() == Some(0) && String::from_utf8_lossy(&o.stdout).trim() == "SERVING"
    })
    .await;

    // --token from stdin: its jti, until it expires.
    let a = issue(&url, Some(&key), "ana").await;
    let r = revoked(&tessera(
        &[&["revoke", "--token", "-"][..], &ep[..]].concat(),
        &with_key,
        &a.access_token,
    ));
    assert_eq!(r["target"], "jti");
    assert_eq!(r["revoked"], 1);
    assert_eq!(r["jti"], a.access_token_id.as_str());
    let exp = a.access_token_expires_at.unwrap().seconds;
    assert_eq!(r["revoked_until"], tessera_telemetry::rfc3339(exp + 30));
    // Again: idempotent, nothing new.
    let r = revoked(&tessera(
        &[&["revoke", "--token", &a.access_token][..], &ep[..]].concat(),
        &with_key,
        "",
    ));
    assert_eq!(r["revoked"], 0);

    // --jti with --expires-at in RFC 3339, from the key file.
    let b = issue(&url, Some(&key), "ben").await;
    let until = tessera_telemetry::rfc3339(b.access_token_expires_at.unwrap().seconds);
    let args = [
        "revoke",
        "--jti",
        &b.access_token_id,
        "--expires-at",
        &until,
        "--service-key-file",
        key_file,
    ];
    let r = revoked(&tessera(&[&args[..], &ep[..]].concat(), &[], ""));
    assert_eq!(
        (r["target"].clone(), r["revoked"].clone()),
        ("jti".into(), 1.into())
    );

    // --family, then --subject (the subject's other session goes too).
    let c = issue(&url, Some(&key), "cy").await;
    let c2 = issue(&url, Some(&key), "cy").await;
    let r = revoked(&tessera(
        &[&["revoke", "--family", &c.family_id][..], &ep[..]].concat(),
        &with_key,
        "",
    ));
    assert_eq!(
        (r["target"].clone(), r["revoked"].clone()),
        ("family".into(), 1.into())
    );
    let r = revoked(&tessera(
        &[
            &["revoke", "--subject", "cy", "--reason", "offboarded"][..],
            &ep[..],
        ]
        .concat(),
        &with_key,
        "",
    ));
    assert_eq!(
        (r["target"].clone(), r["revoked"].clone()),
        ("subject".into(), 1.into())
    );

    // Each is what the server's Verify now answers (inspect asks it).
    for (token, want) in [
        (&a.access_token, "VERIFY_FAILURE_REVOKED"),
        (&b.access_token, "VERIFY_FAILURE_REVOKED"),
        (&c.access_token, "VERIFY_FAILURE_REVOKED"),
        (&c2.access_token, "VERIFY_FAILURE_REVOKED"),
    ] {
        let o = tessera(&["token", "inspect", "--endpoint", &url], &with_key, token);
        assert!(expect(&o, 1).contains(want), "{}", text(&o));
    }

    // keys rotate with the key; then --kid kills the pending key.
    let rotated = expect(
        &tessera(&[&["keys", "rotate"][..], &ep[..]].concat(), &with_key, ""),
        0,
    );
    let pending: serde_json::Value = serde_json::from_str(rotated.lines().next().unwrap()).unwrap();
    let kid = pending["kid"].as_str().unwrap();
    let r = revoked(&tessera(
        &[&["revoke", "--kid", kid][..], &ep[..]].concat(),
        &with_key,
        "",
    ));
    assert_eq!(
        (r["target"].clone(), r["revoked"].clone()),
        ("kid".into(), 1.into())
    );
    let listed = expect(
        &tessera(&[&["keys", "list"][..], &ep[..]].concat(), &with_key, ""),
        0,
    );
    assert!(
        listed
            .lines()
            .any(|l| l.contains(kid) && l.contains("KEY_STATE_COMPROMISED")),
        "{listed}"
    );

    // Usage errors exit 2: no target, two targets, --jti without --expires-at.
    for args in [
        &["revoke"][..],
        &["revoke", "--subject", "a", "--family", "b"],
        &["revoke", "--jti", "j"],
        &["revoke", "--jti", "j", "--expires-at", "soon"],
    ] {
        expect(&tessera(&[args, &ep[..]].concat(), &with_key, ""), 2);
    }
    let logs = stop(server).await;
    assert!(
        !logs.contains(&key),
        "the service key never reaches the logs"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `token inspect` explains every field, flags what Verify would refuse
/// locally, and with --endpoint reports the server's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_inspect_explains_and_asks_the_server() {
    let dir = temp_dir("inspect");
    let (server, addr) = serve_embedded(&dir, &["--listen", "127.0.0.1:0"]);
    let url = format!("http://{addr}");
    let t = issue(&url, None, "user-123").await;

    let out = expect(&tessera(&["token", "inspect"], &[], &t.access_token), 0);
    println!("tessera token inspect:\n{out}");
    for want in [
        "Decoded WITHOUT verification",
        "ES256",
        "ECDSA on P-256",
        "access token (RFC 9068",
        "user-123",
        "orders-api",
        "orders:read",
        &t.family_id,
        &t.access_token_id,
        &format!("http://{addr}"),
        &tessera_telemetry::rfc3339(t.access_token_expires_at.unwrap().seconds),
        "Signature: 64 bytes",
        "nothing; the signature",
    ] {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
    assert!(
        out.contains("(in 14 min)") || out.contains("(in 15 min)"),
        "{out}"
    );
    assert!(
        !out.contains(&t.access_token),
        "the token itself is not echoed"
    );

    // The server's answer, as the argument this time; then after a revoke.
    let out = expect(
        &tessera(
            &["token", "inspect", &t.access_token, "--endpoint", &url],
            &[],
            "",
        ),
        0,
    );
    assert!(
        out.contains("VALID") && out.contains("consistency DEFAULT"),
        "{out}"
    );
    let o = tessera(
        &[
            "token",
            "inspect",
            "--audience",
            "billing",
            "--issuer",
            "https://elsewhere",
        ],
        &[],
        &t.access_token,
    );
    let out = expect(&o, 1);
    assert!(
        out.contains("VERIFY_FAILURE_WRONG_ISSUER")
            && out.contains("VERIFY_FAILURE_WRONG_AUDIENCE"),
        "{out}"
    );
    expect(
        &tessera(
            &["revoke", "--family", &t.family_id, "--endpoint", &url],
            &[],
            "",
        ),
        0,
    );
    let out = expect(
        &tessera(
            &["token", "inspect", "--endpoint", &url, "--strong"],
            &[],
            &t.access_token,
        ),
        1,
    );
    assert!(
        out.contains("VERIFY_FAILURE_REVOKED") && out.contains("consistency STRONG"),
        "{out}"
    );

    // A hostile token: every local refusal listed, hidden characters escaped.
    let b64 = |s: &str| tessera_domain::b64url_encode(s.as_bytes());
    let hostile = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","jku":"https://evil.example/keys","typ":"JWT"}"#),
        b64(
            r#"{"iss":"x","sub":"admin\u202enimda","aud":"a","exp":1000,"nbf":0,"iat":0,"jti":"j","ver":0}"#
        )
    );
    let out = expect(&tessera(&["token", "inspect", &hostile], &[], ""), 1);
    println!("tessera token inspect (hostile):\n{out}");
    for want in [
        "VERIFY_FAILURE_ALGORITHM_NOT_ALLOWED",
        "VERIFY_FAILURE_UNSUPPORTED_HEADER: header parameter(s) Tessera never mints: jku",
        "VERIFY_FAILURE_UNKNOWN_KEY",
        "VERIFY_FAILURE_WRONG_TOKEN_KIND",
        "VERIFY_FAILURE_MALFORMED: the signature is empty",
        "VERIFY_FAILURE_EXPIRED",
        "\\u{202e}",
        "1970-01-01T00:16:40Z",
    ] {
        assert!(out.contains(want), "{want:?} missing from\n{out}");
    }
    assert!(
        !out.contains('\u{202e}'),
        "no raw bidi override on the terminal"
    );
    let out = expect(&tessera(&["token", "inspect", "not-a-token"], &[], ""), 1);
    assert!(
        out.contains("VERIFY_FAILURE_MALFORMED: 1 dot-separated parts"),
        "{out}"
    );
    // No token at all: a usage error.
    let o = tessera(&["token", "inspect"], &[], "");
    expect(&o, 2);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no token on stdin"));
    stop(server).await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `migrate` on a fresh database, `--help`, and the usage exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_help_and_exit_codes() {
    let d = crate::harness::Deployment::new(crate::harness::Backend::Distributed).await;
    let url = d.database_url.clone().unwrap();
    // `Deployment::new` made the database empty: migrate it, twice.
    for _ in 0..2 {
        expect(&tessera(&["migrate", "--database-url", &url], &[], ""), 0);
    }
    let store = tessera_storage::SqlStore::connect(&url).await.unwrap();
    assert!(store.is_migrated().await.unwrap());
    store.close().await;
    let missing = url.rsplit_once('/').unwrap().0.to_owned() + "/tessera_no_such_db";
    let o = tessera(&["migrate", "--database-url", &missing], &[], "");
    expect(&o, 1);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("tessera: "),
        "{}",
        text(&o)
    );

    let help = expect(&tessera(&["--help"], &[], ""), 0);
    for want in [
        "Exit codes",
        "revoke",
        "token",
        "healthcheck",
        "migrate",
        "keys",
    ] {
        assert!(help.contains(want), "{want:?} missing from\n{help}");
    }
    for sub in [
        &["revoke", "--help"][..],
        &["token", "inspect", "--help"],
        &["keys", "list", "--help"],
    ] {
        let h = expect(&tessera(sub, &[], ""), 0);
        assert!(
            h.contains("--service-key-file") && h.contains("--endpoint"),
            "{h}"
        );
    }
    expect(&tessera(&["no-such-command"], &[], ""), 2);
    d.cleanup().await;
}
