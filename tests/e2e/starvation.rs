//! No number of anonymous or slow calls can refuse a known caller. Calls
//! that open a request and never send its message hold no shared place and
//! end after the body timeout with `DEADLINE_EXCEEDED` /
//! `ERROR_REASON_REQUEST_INCOMPLETE`; anonymous calls to open endpoints are
//! bounded apart from known callers, and per peer; refusals reach the audit
//! trail summarised, with the peer's address and a count, and never with a
//! name a client made up.

use crate::harness::service_key as key;
use crate::harness::{AUDIENCE, Backend, Deployment, start_config};
use serde_json::Value;
use std::time::Duration;
use tessera_proto::v1::{GetJwksRequest, IssueRequest};
use tonic::{Code, Request};

fn issue_as(key: &str) -> Request<IssueRequest> {
    let mut r = Request::new(IssueRequest {
        subject: "ana".into(),
        audience: AUDIENCE.into(),
        ..Default::default()
    });
    r.metadata_mut()
        .insert("authorization", format!("Bearer {key}").parse().unwrap());
    r
}

/// `n` gRPC calls to `path` on one raw HTTP/2 connection, headers only:
/// their messages are never sent. Returns the response futures and the
/// request streams (kept open).
async fn silent_calls(
    addr: std::net::SocketAddr,
    path: &str,
    n: usize,
) -> Vec<(h2::client::ResponseFuture, h2::SendStream<bytes::Bytes>)> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut calls = Vec::new();
    for _ in 0..n {
        let mut client = client.clone().ready().await.unwrap();
        let request = http::Request::post(format!("http://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .unwrap();
        calls.push(client.send_request(request, false).unwrap());
    }
    calls
}

/// Known callers' calls during a flood of silent and of fast anonymous
/// calls: every one served; the silent ones end as incomplete, the fast
/// ones are answered or shed, never anything else (the bounds themselves
/// are proven exactly by `tessera-edge`'s unit tests, where no scheduler
/// decides how many calls overlap); the audit trail summarises the
/// refusals.
#[tokio::test]
async fn anonymous_and_slow_calls_cannot_starve_a_known_caller() {
    use tracing_subscriber::prelude::*;
    let (layer, buffer) = tessera::audit_log::capture();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let d = Deployment::new(Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let (k, h) = key();
    let file = d.data_dir.join("callers.toml");
    let entry = format!(
        "[[caller]]\nid = \"app-a\"\nkey_sha256 = [\"{h}\"]\nrpcs = [\"Issue\"]\naudiences = [\"*\"]\n"
    );
    std::fs::write(&file, entry).unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    cfg.edge.max_in_flight = 8;
    cfg.edge.max_open_in_flight = 4;
    cfg.edge.max_open_per_peer = 1;
    cfg.edge.body_timeout = Duration::from_millis(1500);
    let (app, stop, handle) = start_config(cfg).await;

    // 1,100 anonymous GetJwks (open by default) whose messages never come:
    // more than every bound together.
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.extend(silent_calls(app.addr, "/tessera.v1.KeyService/GetJwks", 220).await);
    }
    // Meanwhile the known caller is served, every time.
    for _ in 0..20 {
        let r = app.issuer.clone().issue(issue_as(&k)).await;
        assert!(r.is_ok(), "the known caller is served: {r:?}");
    }
    // Each silent call ends, incomplete, once its body timeout passes.
    let mut incomplete = 0;
    for (response, _stream) in silent {
        let response = tokio::time::timeout(Duration::from_secs(30), response)
            .await
            .expect("a silent call ends")
            .unwrap();
        let status = tonic::Status::from_header_map(response.headers()).expect("a gRPC status");
        assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
        assert_eq!(
            crate::harness::reason(&status),
            "ERROR_REASON_REQUEST_INCOMPLETE"
        );
        incomplete += 1;
    }
    assert_eq!(incomplete, 1100);

    // Fast anonymous calls beyond the open bounds are shed; the known
    // caller, calling at the same time, never is.
    let flood: Vec<_> = (0..200)
        .map(|_| {
            let mut keys = app.keys.clone();
            tokio::spawn(async move { keys.get_jwks(GetJwksRequest {}).await })
        })
        .collect();
    for _ in 0..20 {
        let r = app.issuer.clone().issue(issue_as(&k)).await;
        assert!(r.is_ok(), "the known caller is served: {r:?}");
    }
    let mut shed = 0;
    for f in flood {
        if let Err(s) = f.await.unwrap() {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            assert_eq!(crate::harness::reason(&s), "ERROR_REASON_OVERLOADED");
            shed += 1;
        }
    }
    eprintln!(
        "starvation: 1100 silent calls incomplete, {shed} of 200 fast anonymous calls shed, 40 known calls all served"
    );

    // Made-up method names (12,000 characters, or 150 different short
    // ones) are no RPC: UNIMPLEMENTED, and nothing in the trail; 150
    // anonymous Issue calls: one summarised record.
    let long = format!("/tessera.v1.IssuerService/{}", "A".repeat(12_000));
    let mut made_up = silent_calls(app.addr, &long, 1).await;
    for i in 0..150 {
        let path = format!("/tessera.v1.IssuerService/Flood{i}");
        made_up.extend(silent_calls(app.addr, &path, 1).await);
    }
    for (response, _stream) in made_up {
        let response = response.await.unwrap();
        let status = response.headers().get("grpc-status").unwrap();
        assert_eq!(status, "12", "UNIMPLEMENTED: {response:?}");
    }
    for _ in 0..150 {
        let s = app
            .issuer
            .clone()
            .issue(Request::new(IssueRequest::default()))
            .await;
        assert_eq!(s.unwrap_err().code(), Code::Unauthenticated);
    }
    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;

    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    assert!(
        !text.contains(&"A".repeat(100)) && !text.contains("Flood"),
        "no made-up name in the trail"
    );
    let denied: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "caller_denied")
        .collect();
    let count = |rpc: &str| -> u64 {
        denied
            .iter()
            .filter(|e| e["rpc"] == rpc && e["detail"] == "no credential")
            .map(|e| {
                assert_eq!(e["peer"], "127.0.0.1", "{e}");
                e["count"].as_u64().unwrap()
            })
            .sum()
    };
    assert_eq!(count("other"), 0, "{denied:#?}");
    assert_eq!(count("Issue"), 150, "{denied:#?}");
    assert!(
        denied.len() <= 8,
        "300 refusals summarised in a few records, not one each: {}",
        denied.len()
    );
}
