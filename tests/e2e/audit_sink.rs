//! The binary's audit sinks: `--audit-log` (its own file, 0600, nothing of
//! it in the general log), else JSON lines on stderr.

use crate::audit::find;
use crate::binary::{serve_embedded, stop, temp_dir};
use crate::harness::AUDIENCE;
use serde_json::{Value, json};
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;
use tessera_proto::v1::{IssueRequest, RefreshRequest};

/// The binary: the audit trail in its own file with `--audit-log` (0600,
/// nothing of it in the general log), else JSON lines on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_writes_the_trail_to_its_own_sink() {
    let dir = temp_dir("audit");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("audit.jsonl");
    let listen = ["--listen", "127.0.0.1:0", "--refresh-grace", "0"];
    let (server, addr) = serve_embedded(
        &dir,
        &[&listen[..], &["--audit-log", path.to_str().unwrap()]].concat(),
    );
    let mut issuer = IssuerServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let t = issuer
        .issue(IssueRequest {
            subject: "bin".into(),
            audience: AUDIENCE.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let _ = issuer
            .refresh(RefreshRequest {
                refresh_token: t.refresh_token.clone(),
                scopes: vec![],
            })
            .await;
    }
    let logs = stop(server).await;
    assert!(
        !logs.contains("\"event\""),
        "no audit event in the general log:\n{logs}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let trail = std::fs::read_to_string(&path).unwrap();
    let all: Vec<Value> = trail
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    find(
        &all,
        "refresh_token_reused",
        &json!({"caller": "unknown", "subject": "bin", "family_id": t.family_id}),
    );
    assert_eq!(all[0]["event"], "key_activated", "{trail}");
    assert!(!trail.contains(&t.refresh_token) && !trail.contains(&t.access_token));

    // Without --audit-log: JSON lines on stderr, among the general log (a
    // fresh directory, so the first key's activation is written).
    let fresh = temp_dir("audit-stderr");
    let (server, _) = serve_embedded(&fresh, &listen);
    let logs = stop(server).await;
    let audit_lines: Vec<Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The first key's activation and its standby's publication.
    let events: Vec<_> = audit_lines.iter().map(|l| l["event"].clone()).collect();
    assert_eq!(events, ["key_activated", "key_published"], "{logs}");
    assert!(
        audit_lines.iter().all(|l| l["caller"] == "tessera"),
        "{logs}"
    );
    assert!(
        logs.contains("shutting down"),
        "the general log too:\n{logs}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&fresh);
}
