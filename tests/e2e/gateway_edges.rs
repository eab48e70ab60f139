//! Gateways at the edges of the promise: a view gone stale (every way a
//! gateway asks fails closed, and opens again when the store is back), a
//! routes file rewritten in place while requests flow (never read
//! half-written), and gateway questions cancelled by thousands before their
//! answer (the next ones are answered as before).

use crate::gateway_procs::{Gateway, Upstream, get};
use crate::gateways::{ROUTES, ask, header, issue, start, write_files};
use crate::harness::{AUDIENCE, Backend, Deployment, as_caller, eventually};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Envoy's `Check` for `GET api.test/orders/1` with `token`: the gRPC
/// status code and the denied HTTP status (0 when allowed).
async fn envoy_check(channel: tonic::transport::Channel, gw: &str, token: &str) -> (i32, i32) {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::{
        AttributeContext, CheckRequest, attribute_context,
    };
    let http = attribute_context::HttpRequest {
        method: "GET".into(),
        host: "api.test".into(),
        path: "/orders/1".into(),
        headers: [("authorization".to_owned(), format!("Bearer {token}"))].into(),
        ..Default::default()
    };
    let request = CheckRequest {
        attributes: Some(AttributeContext {
            request: Some(attribute_context::Request {
                http: Some(http),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let r = AuthorizationClient::new(channel)
        .check(as_caller(request, gw))
        .await
        .unwrap()
        .into_inner();
    let denied = match r.http_response {
        Some(HttpResponse::DeniedResponse(d)) => d.status.map_or(-1, |s| s.code),
        _ => 0,
    };
    (r.status.map_or(-1, |s| s.code), denied)
}

/// With Postgres gone the introspection role's view stops catching up;
/// once it is older than `--max-view-staleness` (30 s, on the deployment's
/// clock) every way of asking fails closed: forward-auth 503 with no
/// identity, nginx 500 (its `auth_request` turns any other status into
/// one), Caddy 503 as Tessera sent it, Envoy's `Check` UNAVAILABLE with a
/// denied 503. With Postgres back, the same token passes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_view_fails_closed_at_every_gateway() {
    let d = Deployment::new(Backend::Distributed).await;
    let k = write_files(&d.data_dir);
    let app = start(&d).await;
    let t = issue(&app, &k.ops, "alice", AUDIENCE).await;
    let upstream = Upstream::start().await;
    let nginx = Gateway::nginx(app.addr, upstream.addr, &k.gw);
    let caddy = Gateway::caddy(app.addr, upstream.addr, &k.gw);
    let bearer = format!("Bearer {}", t.access_token);
    let through = |gateway: &Gateway| {
        let addr = SocketAddr::from(([127, 0, 0, 1], gateway.port));
        let bearer = bearer.clone();
        async move {
            let auth = [("Authorization", bearer.as_str())];
            get(addr, "/orders/1", "api.test", &auth).await.0
        }
    };
    let direct = || ask(&app, &k.gw, "api.test", "/orders/1", Some(&t.access_token));
    let envoy = || envoy_check(app.channel.clone(), &k.gw, &t.access_token);
    assert_eq!(direct().await.0, 200);
    assert_eq!((through(&nginx).await, through(&caddy).await), (200, 200));
    assert_eq!(envoy().await, (0, 0));

    d.allow_connections(false).await;
    // Within the bound the view still answers: a store outage alone does
    // not close the gateways.
    assert_eq!(direct().await.0, 200, "stale only past the bound");
    d.clock.advance(31);
    eventually("forward-auth answers 503 on a stale view", || async {
        direct().await.0 == 503
    })
    .await;
    let (_, headers) = direct().await;
    assert_eq!(header(&headers, "x-tessera-subject"), None, "{headers:?}");
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    assert_eq!(through(&nginx).await, 500, "nginx fails closed");
    assert_eq!(through(&caddy).await, 503, "Caddy fails closed");
    assert_eq!(envoy().await, (14, 503), "Envoy: UNAVAILABLE, denied 503");

    d.allow_connections(true).await;
    eventually(
        "forward-auth answers 200 once the view caught up",
        || async { direct().await.0 == 200 },
    )
    .await;
    assert_eq!((through(&nginx).await, through(&caddy).await), (200, 200));
    assert_eq!(envoy().await, (0, 0));
    drop((nginx, caddy));
    app.stop().await;
    d.cleanup().await;
}

/// The routes file is rewritten in place (truncated, the first half
/// written, the rest 900 ms later, as a slow editor or config tool would)
/// five times, 5 s apart, while requests for the route at its end flow. A
/// half file is valid TOML holding only the other routes: read, it would
/// refuse the route (403) until the next reload, and a 2 s poll lands in
/// the 900 ms window of three of them (see below). It is never read: every answer
/// is 200, every reload in the audit trail read the whole file, and a
/// final rewrite that really drops the route takes effect. (One thread:
/// the audit capture is this thread's subscriber.)
#[tokio::test]
async fn routes_rewritten_in_place_are_never_read_half_written() {
    use tracing_subscriber::prelude::*;
    let (layer, buffer) = tessera::audit_log::capture();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let reloads = || {
        crate::audit::events(&buffer)
            .into_iter()
            .filter(|e| e["event"] == "gateway_routes_reloaded")
            .collect::<Vec<_>>()
    };
    let d = Deployment::new(Backend::Embedded).await;
    let k = write_files(&d.data_dir);
    let app = start(&d).await;
    let t = issue(&app, &k.ops, "alice", AUDIENCE).await;
    let path = d.data_dir.join("routes.toml");
    // The asked route last; a comment pads the first half so that the
    // cut falls between the routes.
    let tail =
        "\n[[route]]\nhost = \"api.test\"\npath_prefix = \"/orders\"\naudience = \"orders-api\"\n";
    let head = format!(
        "{}\n# {}\n",
        ROUTES.replace(
            "path_prefix = \"/orders\"\n",
            "path_prefix = \"/elsewhere\"\n"
        ),
        "-".repeat(200)
    );
    std::fs::write(&path, format!("{head}{tail}")).unwrap();
    eventually("the rewritten routes", || async {
        ask(&app, &k.gw, "api.test", "/elsewhere", Some(&t.access_token))
            .await
            .0
            == 200
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let (asked, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut askers = Vec::new();
    for _ in 0..4 {
        let (app, gw, token) = (app.clone_clients(), k.gw.clone(), t.access_token.clone());
        let (stop, asked, refused) = (stop.clone(), asked.clone(), refused.clone());
        askers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let status = ask(&app, &gw, "api.test", "/orders/1", Some(&token))
                    .await
                    .0;
                asked.fetch_add(1, Ordering::Relaxed);
                if status != 200 {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    // The reload just seen came from a poll: the polls are 2 s apart from
    // it. Starting the 5 s cycles 1.5 s after it puts a poll 0.5 s into
    // the half-written window of cycles 1, 3 and 5, so a watcher that read
    // a file the moment it changed would read a half file three times;
    // and 4 s of quiet after each whole file lets it settle and be read.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..5 {
        use std::io::Write;
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(head.as_bytes()).unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(900)).await;
        f.write_all(tail.as_bytes()).unwrap();
        drop(f);
        tokio::time::sleep(Duration::from_millis(4100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for a in askers {
        a.await.unwrap();
    }
    let (asked, refused) = (
        asked.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    println!("routes rewritten in place 5 times: {refused} of {asked} answers refused");
    assert!(asked > 100, "only {asked} asked");
    assert_eq!(refused, 0, "a half-written routes file was read");
    let seen = reloads();
    assert_eq!(seen[0]["trigger"], "start", "{seen:#?}");
    assert!(seen.len() >= 4, "reloads during the rewrites: {seen:#?}");
    for e in &seen[1..] {
        assert_eq!(
            (&e["result"], &e["routes"]),
            (&"ok".into(), &4.into()),
            "{seen:#?}"
        );
    }

    std::fs::write(&path, &head).unwrap();
    eventually("the route dropped for good", || async {
        ask(&app, &k.gw, "api.test", "/orders/1", Some(&t.access_token))
            .await
            .0
            == 403
    })
    .await;
    let last = reloads().pop().unwrap();
    assert_eq!(
        (&last["trigger"], &last["routes"]),
        (&"modified".into(), &3.into())
    );
    app.stop().await;
    d.cleanup().await;
}

/// Gateway questions cancelled before their answer (the connection closed
/// right after the request was sent, 2,000 times over HTTP/1.1, and 500
/// Envoy `Check`s dropped mid-call) leave nothing behind: the next
/// questions are answered as before, allowed and refused alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_gateway_questions_leave_the_answers_as_they_were() {
    use tokio::io::AsyncWriteExt;
    let d = Deployment::new(Backend::Embedded).await;
    let k = write_files(&d.data_dir);
    let app = start(&d).await;
    let t = issue(&app, &k.ops, "alice", AUDIENCE).await;
    let request = format!(
        "GET /gateway/auth HTTP/1.1\r\nHost: tessera\r\nX-Tessera-Gateway-Key: {}\r\n\
         X-Forwarded-Host: api.test\r\nX-Forwarded-Uri: /orders/1\r\n\
         Authorization: Bearer {}\r\n\r\n",
        k.gw, t.access_token
    );
    let mut cancelled = Vec::new();
    for _ in 0..8 {
        let (addr, request) = (app.addr, request.clone());
        cancelled.push(tokio::spawn(async move {
            for _ in 0..250 {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(request.as_bytes()).await.unwrap();
                drop(s);
            }
        }));
    }
    for _ in 0..500 {
        let check = envoy_check(app.channel.clone(), &k.gw, &t.access_token);
        let _ = tokio::time::timeout(Duration::from_micros(50), check).await;
    }
    for c in cancelled {
        c.await.unwrap();
    }
    assert_eq!(
        ask(&app, &k.gw, "api.test", "/orders/1", Some(&t.access_token))
            .await
            .0,
        200
    );
    assert_eq!(
        ask(&app, &k.gw, "api.test", "/orders/1", Some("x.y.z"))
            .await
            .0,
        401
    );
    assert_eq!(
        envoy_check(app.channel.clone(), &k.gw, &t.access_token).await,
        (0, 0)
    );
    // The server is whole: health and a store-backed call still answer.
    let again = issue(&app, &k.ops, "bob", AUDIENCE).await;
    assert_eq!(
        ask(
            &app,
            &k.gw,
            "api.test",
            "/orders/1",
            Some(&again.access_token)
        )
        .await
        .0,
        200
    );
    app.stop().await;
    d.cleanup().await;
}
