//! The HTTP probes on the gRPC port: `/livez`, `/readyz` (from the same
//! check as gRPC health), open to anyone even with a callers file; unknown
//! HTTP paths answer 404 while unknown gRPC methods stay UNIMPLEMENTED.
//! (`/readyz` through a database outage: `distributed.rs`.)

use crate::harness::{Backend, Deployment, eventually, spawn_app, start_config};
use tonic::Code;

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// Waits until `/readyz` answers 200 and returns its body.
pub async fn ready(app: &crate::harness::TestApp) -> serde_json::Value {
    eventually("/readyz answers 200", || async {
        app.http_get("/readyz", "").await.0 == 200
    })
    .await;
    json(&app.http_get("/readyz", "").await.2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn livez_and_readyz_answer_and_unknown_paths_are_404() {
    let (d, app) = spawn_app(Backend::Embedded).await;

    let (status, headers, body) = app.http_get("/livez", "").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(headers.contains(&("cache-control".into(), "no-store".into())));

    let r = ready(&app).await;
    assert_eq!(r["status"], "SERVING");
    assert_eq!(r["reasons"], serde_json::json!([]));
    for s in [
        "tessera.v1.IssuerService",
        "tessera.v1.KeyService",
        "tessera.v1.IntrospectionService",
        "tessera.v1.RevocationService",
    ] {
        assert_eq!(r["services"][s], "SERVING", "{r}");
        let (status, _, body) = app.http_get(&format!("/readyz?service={s}"), "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["service"], s);
    }
    let (status, _, body) = app
        .http_get("/readyz?service=tessera.v1.NoSuchService", "")
        .await;
    assert_eq!(status, 404, "{body}");

    // A plain HTTP check must never read an unknown path as healthy.
    for path in [
        "/healthz",
        "/anything",
        "/",
        "/tessera.v1.IssuerService/Nope",
        "/grpc.health.v1.Health/Check",
    ] {
        let (status, headers, body) = app.http_get(path, "").await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !headers.iter().any(|(k, _)| k == "grpc-status"),
            "{path}: {headers:?}"
        );
    }
    // The same unknown path asked as gRPC is UNIMPLEMENTED, in gRPC's terms.
    let (status, headers, _) = app
        .http_get("/anything", "content-type: application/grpc\r\n")
        .await;
    assert_eq!(status, 200);
    assert!(
        headers.contains(&("grpc-status".into(), "12".into())),
        "{headers:?}"
    );

    // A real gRPC client calling a method or a service nobody serves.
    for path in [
        "/tessera.v1.IssuerService/NoSuchMethod",
        "/no.such.Service/Call",
    ] {
        let mut grpc = tonic::client::Grpc::new(app.channel.clone());
        grpc.ready().await.unwrap();
        let r: Result<tonic::Response<tonic_health::pb::HealthCheckResponse>, _> = grpc
            .unary(
                tonic::Request::new(tonic_health::pb::HealthCheckRequest::default()),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                tonic_prost::ProstCodec::default(),
            )
            .await;
        assert_eq!(r.unwrap_err().code(), Code::Unimplemented, "{path}");
    }
    app.stop().await;
    d.cleanup().await;
}

/// With a callers file, the probes stay open (like gRPC health) while the
/// RPCs need a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_need_no_credential() {
    let d = Deployment::new(Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let file = d.data_dir.join("callers.toml");
    let (_key, hash) = tessera_domain::callers::new_service_key();
    std::fs::write(
        &file,
        format!("[[caller]]\nid = \"ops\"\nkey_sha256 = [\"{hash}\"]\nrpcs = [\"Issue\"]\naudiences = [\"*\"]\n"),
    )
    .unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    let (app, stop, handle) = start_config(cfg).await;
    assert_eq!(
        app.try_issue("x").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(app.http_get("/livez", "").await.0, 200);
    assert_eq!(ready(&app).await["status"], "SERVING");
    // An unknown path is still 404, not a refusal.
    assert_eq!(app.http_get("/nope", "").await.0, 404);
    let _ = stop.send(());
    handle.await.unwrap().unwrap();
    d.cleanup().await;
}
