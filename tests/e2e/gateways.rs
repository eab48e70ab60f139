//! Gateways asking Tessera: the HTTP forward-auth endpoint directly, nginx
//! and Caddy running the configurations shipped in examples/gateway, Envoy's
//! gRPC `ext_authz` from a client built from the same types Envoy uses, and
//! a Redis reader following the README's deny-list key format.

use crate::gateway_procs::{Gateway, Upstream, get};
use crate::harness::{
    AUDIENCE, Backend, Deployment, TestApp, as_caller, eventually, kid_of, on_both_backends,
    service_key as key,
};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{IssueRequest, IssueResponse, RevokeRequest};

pub(crate) const ROUTES: &str = r#"
[[route]]
host = "api.test"
path_prefix = "/orders"
audience = "orders-api"

[[route]]
host = "api.test"
path_prefix = "/orders/write"
audience = "orders-api"
scopes = ["orders:write"]

[[route]]
host = "billing.test"
audience = "billing"
"#;

/// The service keys of the callers file: `ops` issues and revokes
/// everything, `gw` is a gateway, `plain` may Verify but is no gateway.
pub(crate) struct Keys {
    pub(crate) ops: String,
    pub(crate) gw: String,
    pub(crate) plain: String,
}

pub(crate) fn write_files(dir: &Path) -> Keys {
    std::fs::create_dir_all(dir).unwrap();
    let ((ops, ops_h), (gw, gw_h), (plain, plain_h)) = (key(), key(), key());
    std::fs::write(
        dir.join("callers.toml"),
        format!(
            "[[caller]]\nid = \"ops\"\nkey_sha256 = [\"{ops_h}\"]\n\
             rpcs = [\"Issue\", \"Revoke\", \"Verify\"]\naudiences = [\"*\"]\n\
             revoke = [\"jti\", \"family\", \"subject\", \"kid\"]\n\n\
             [[caller]]\nid = \"edge-gw\"\nkey_sha256 = [\"{gw_h}\"]\ngateway = true\n\n\
             [[caller]]\nid = \"plain\"\nkey_sha256 = [\"{plain_h}\"]\nrpcs = [\"Verify\"]\n\
             audiences = [\"{AUDIENCE}\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("routes.toml"), ROUTES).unwrap();
    Keys { ops, gw, plain }
}

/// An instance of `d` with the callers and routes files of `d`'s data dir.
pub(crate) async fn start(d: &Deployment) -> TestApp {
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(d.data_dir.join("callers.toml"));
    cfg.gateway_routes_file = Some(d.data_dir.join("routes.toml"));
    d.start_with(cfg).await
}

pub(crate) async fn issue(
    app: &TestApp,
    ops: &str,
    subject: &str,
    audience: &str,
) -> IssueResponse {
    let mut issuer = app.issuer.clone();
    let request = IssueRequest {
        subject: subject.into(),
        audience: audience.into(),
        scopes: vec!["orders:read".into()],
        client_id: "ops".into(),
        ..Default::default()
    };
    issuer
        .issue(as_caller(request, ops))
        .await
        .expect("Issue")
        .into_inner()
}

async fn revoke(app: &TestApp, ops: &str, target: Target) {
    let request = RevokeRequest {
        target: Some(target),
        reason: String::new(),
    };
    app.revocation
        .clone()
        .revoke(as_caller(request, ops))
        .await
        .expect("Revoke");
}

pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Asks the forward-auth endpoint as gateway `key` about a request for
/// `host` and `uri` carrying `authorization`.
pub(crate) async fn ask(
    app: &TestApp,
    key: &str,
    host: &str,
    uri: &str,
    authorization: Option<&str>,
) -> (u16, Vec<(String, String)>) {
    let bearer = authorization.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("X-Tessera-Gateway-Key", key),
        ("X-Forwarded-Host", host),
        ("X-Forwarded-Uri", uri),
        ("X-Forwarded-Method", "GET"),
    ];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b));
    }
    let (status, headers, _) = get(app.addr, "/gateway/auth", "tessera", &headers).await;
    (status, headers)
}

/// The forward-auth endpoint's answers, route by route, and who may ask.
async fn forward_auth_answers_by_route(backend: Backend) {
    let d = Deployment::new(backend).await;
    let k = write_files(&d.data_dir);
    let app = start(&d).await;
    let t = issue(&app, &k.ops, "alice", AUDIENCE).await;
    let at = t.access_token.as_str();

    let (status, headers) = ask(&app, &k.gw, "api.test", "/orders/7?x=1", Some(at)).await;
    assert_eq!(status, 200, "{headers:?}");
    assert_eq!(header(&headers, "x-tessera-subject"), Some("alice"));
    assert_eq!(header(&headers, "x-tessera-scopes"), Some("orders:read"));
    assert_eq!(header(&headers, "x-tessera-client-id"), Some("ops"));
    assert_eq!(header(&headers, "x-tessera-audience"), Some(AUDIENCE));
    let jti = header(&headers, "x-tessera-token-id").unwrap().to_owned();
    assert!(!jti.is_empty());
    assert_eq!(header(&headers, "cache-control"), Some("no-store"));

    // RFC 6750 §3: no token, a bare challenge; a bad one, invalid_token
    // and nothing more; a scope short, insufficient_scope naming it.
    type Case<'a> = (&'a str, &'a str, Option<&'a str>, u16, Option<&'a str>);
    let cases: [Case<'_>; 9] = [
        ("api.test", "/orders", None, 401, Some("Bearer")),
        (
            "api.test",
            "/orders",
            Some("not.a.token"),
            401,
            Some(r#"Bearer error="invalid_token""#),
        ),
        (
            "api.test",
            "/orders",
            Some(&at[..at.len() - 3]),
            401,
            Some(r#"Bearer error="invalid_token""#),
        ),
        // Another route's audience: the token is not for billing.
        (
            "billing.test",
            "/",
            Some(at),
            401,
            Some(r#"Bearer error="invalid_token""#),
        ),
        (
            "api.test",
            "/orders/write/1",
            Some(at),
            403,
            Some(r#"Bearer error="insufficient_scope", scope="orders:write""#),
        ),
        // No route: refused, never verified against any audience.
        ("api.test", "/admin", Some(at), 403, None),
        ("other.test", "/orders", Some(at), 403, None),
        // A path the upstream could read as another route's.
        ("api.test", "/orders/../admin", Some(at), 403, None),
        ("api.test", "/orders%2f..%2fadmin", Some(at), 403, None),
    ];
    for (host, uri, token, want, challenge) in cases {
        let (status, headers) = ask(&app, &k.gw, host, uri, token).await;
        assert_eq!(status, want, "{host}{uri}: {headers:?}");
        assert_eq!(
            header(&headers, "www-authenticate"),
            challenge,
            "{host}{uri}"
        );
        assert_eq!(header(&headers, "x-tessera-subject"), None, "{host}{uri}");
    }

    // The request described twice (a client's header beside the
    // gateway's): refused, not read either way.
    let bearer = format!("Bearer {at}");
    let twice = [
        ("X-Tessera-Gateway-Key", k.gw.as_str()),
        ("X-Forwarded-Host", "api.test"),
        ("X-Forwarded-Uri", "/orders"),
        ("X-Forwarded-Uri", "/admin"),
        ("Authorization", bearer.as_str()),
    ];
    let (status, _, _) = get(app.addr, "/gateway/auth", "tessera", &twice).await;
    assert_eq!(status, 403);
    // ...and the path below the endpoint (Envoy's HTTP ext_authz) beside
    // an X-Forwarded-Uri a client may have slipped through.
    let below = [
        ("X-Tessera-Gateway-Key", k.gw.as_str()),
        ("X-Forwarded-Host", "api.test"),
        ("X-Forwarded-Uri", "/orders/1"),
        ("Authorization", bearer.as_str()),
    ];
    let (status, _, _) = get(app.addr, "/gateway/auth/orders/write", "tessera", &below).await;
    assert_eq!(status, 403, "described by the path below and the header");

    // Only gateways ask: no key, a wrong key, or a caller without the
    // gateway right. The client's bearer token is never taken for one.
    // A gateway not admitted is the deployment's fault, not the client's
    // token's: 500, with no body or challenge a gateway could hand its
    // client (Caddy passes bodies on), and no caller id.
    for gw_key in ["", "tsk_wrong", k.plain.as_str()] {
        let headers = [
            ("X-Tessera-Gateway-Key", gw_key),
            ("X-Forwarded-Host", "api.test"),
            ("X-Forwarded-Uri", "/orders"),
            ("Authorization", bearer.as_str()),
        ];
        let (status, headers, body) = get(app.addr, "/gateway/auth", "tessera", &headers).await;
        assert_eq!((status, body.as_str()), (500, ""), "gateway key {gw_key:?}");
        assert_eq!(header(&headers, "www-authenticate"), None);
        assert_eq!(header(&headers, "cache-control"), Some("no-store"));
    }
    let (status, _) = ask(&app, &k.ops, "api.test", "/orders", Some(&k.gw)).await;
    assert_eq!(status, 500, "a caller without the gateway right");

    // Revoked: refused at once (one instance: its own view).
    revoke(&app, &k.ops, Target::Token(at.to_owned())).await;
    let (status, _) = ask(&app, &k.gw, "api.test", "/orders", Some(at)).await;
    assert_eq!(status, 401);

    // A reload mid-run: a new route opens, the removed one closes.
    let t2 = issue(&app, &k.ops, "bob", "billing").await;
    let reloaded = ROUTES.replace("host = \"billing.test\"", "host = \"pay.test\"");
    std::fs::write(d.data_dir.join("routes.toml"), reloaded).unwrap();
    eventually("the reloaded routes", || async {
        ask(&app, &k.gw, "pay.test", "/", Some(&t2.access_token))
            .await
            .0
            == 200
    })
    .await;
    let (status, _) = ask(&app, &k.gw, "billing.test", "/", Some(&t2.access_token)).await;
    assert_eq!(status, 403);
    // A broken file keeps the routes in force.
    std::fs::write(d.data_dir.join("routes.toml"), "[[route]]\nhost = 1\n").unwrap();
    // Two polls (the change settles) and a margin.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, _) = ask(&app, &k.gw, "pay.test", "/", Some(&t2.access_token)).await;
    assert_eq!(
        status, 200,
        "a broken routes file replaced the routes in force"
    );

    app.stop().await;
    d.cleanup().await;
}

on_both_backends!(forward_auth_answers_by_route);

/// Through a real gateway: the identity reaches the upstream and a client's
/// own identity headers never do; refusals carry their challenge; each kind
/// of revocation, made on another instance, is refused at the gateway
/// within the propagation bound; with Tessera stopped the gateway fails
/// closed.
async fn through(name: &str, start_gateway: fn(SocketAddr, SocketAddr, &str) -> Gateway) {
    let d = Deployment::new(Backend::Distributed).await;
    let k = write_files(&d.data_dir);
    let (asked, other) = (start(&d).await, start(&d).await);
    let upstream = Upstream::start().await;
    let gateway = start_gateway(asked.addr, upstream.addr, &k.gw);
    let addr = SocketAddr::from(([127, 0, 0, 1], gateway.port));
    let call = |token: String, path: &'static str| async move {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![
            ("X-Tessera-Subject", "admin"),
            ("X-Tessera-Scopes", "admin:all"),
            ("X-Tessera-Gateway-Key", "forged"),
            ("X-Forwarded-Uri", "/billing"),
            ("X-Forwarded-Host", "billing.test"),
            ("X-Original-URI", "/billing"),
            ("X-Original-URL", "/billing"),
            ("X-Rewrite-URL", "/billing"),
            ("Forwarded", "host=billing.test"),
            ("X-Forwarded-Prefix", "/billing"),
            ("X_Tessera_Subject", "admin"),
            ("X-Tessera_Scopes", "admin:all"),
            ("x_tessera_client_id", "evil"),
        ];
        if !token.is_empty() {
            headers.push(("Authorization", &bearer));
        }
        let (status, headers, body) = get(addr, path, "api.test", &headers).await;
        (status, headers, body)
    };

    let t = issue(&other, &k.ops, "alice", AUDIENCE).await;
    let (status, _, body) = call(t.access_token.clone(), "/orders/1").await;
    assert_eq!(status, 200, "{name}: {body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["x-tessera-subject"], "alice", "{name}: {seen}");
    assert_eq!(seen["x-tessera-scopes"], "orders:read", "{name}: {seen}");
    assert_eq!(seen["x-tessera-client-id"], "ops", "{name}: {seen}");
    assert!(
        seen.get("x-tessera-gateway-key").is_none(),
        "{name}: {seen}"
    );
    // The application is told the host Tessera was asked about, and no
    // client's description of the request.
    assert_eq!(seen["host"], "api.test", "{name}: {seen}");
    assert_eq!(seen["x-forwarded-host"], "api.test", "{name}: {seen}");
    for forged in [
        "x-forwarded-uri",
        "x-original-uri",
        "x-original-url",
        "x-rewrite-url",
        "forwarded",
        "x-forwarded-prefix",
    ] {
        assert!(seen.get(forged).is_none(), "{name}: {forged} {seen}");
    }
    // No identity header in another spelling (underscores) either.
    for (key, _) in seen.as_object().unwrap() {
        let folded = key.replace('_', "-");
        assert!(
            key == &folded || !folded.starts_with("x-tessera"),
            "{name}: {key} reached the application: {seen}"
        );
    }
    gateway_smuggling(name, addr, &t.access_token).await;
    // Paths an upstream could read as another route's (`/orders/write`
    // needs orders:write; `..;` is a dot segment to Tomcat) never pass.
    for path in [
        "/orders/%77rite",
        "/orders/WRITE",
        "/orders/write;x=1",
        "/orders/..;/admin",
    ] {
        let status = call(t.access_token.clone(), path).await.0;
        assert!((400..500).contains(&status), "{name} {path}: {status}");
    }

    for (token, path, want, challenge) in [
        (String::new(), "/orders/1", 401, "Bearer"),
        (
            "x.y.z".to_owned(),
            "/orders/1",
            401,
            r#"Bearer error="invalid_token""#,
        ),
        (
            t.access_token.clone(),
            "/orders/write",
            403,
            r#"Bearer error="insufficient_scope", scope="orders:write""#,
        ),
    ] {
        let (status, headers, _) = call(token, path).await;
        assert_eq!(status, want, "{name} {path}");
        assert_eq!(
            header(&headers, "www-authenticate"),
            Some(challenge),
            "{name} {path}"
        );
    }
    let billing = issue(&other, &k.ops, "alice", "billing").await;
    assert_eq!(
        call(billing.access_token, "/orders/1").await.0,
        401,
        "{name}: another audience"
    );

    // Each kind of revocation, on the other instance; the last kills the
    // signing key, so it goes last.
    let fresh = |subject: &'static str| issue(&other, &k.ops, subject, AUDIENCE);
    let (by_token, by_family, by_subject, by_key) = (
        fresh("t").await,
        fresh("f").await,
        fresh("carol").await,
        fresh("k").await,
    );
    let kinds = [
        (
            "token",
            by_token.access_token.clone(),
            Target::Token(by_token.access_token),
        ),
        (
            "family",
            by_family.access_token,
            Target::FamilyId(by_family.family_id),
        ),
        (
            "subject",
            by_subject.access_token,
            Target::Subject("carol".into()),
        ),
        (
            "key",
            by_key.access_token.clone(),
            Target::Kid(kid_of(&by_key.access_token)),
        ),
    ];
    for (kind, token, target) in kinds {
        assert_eq!(
            call(token.clone(), "/orders/1").await.0,
            200,
            "{name} {kind}"
        );
        let start = Instant::now();
        revoke(&other, &k.ops, target).await;
        eventually(&format!("{name}: refused after Revoke by {kind}"), || {
            let token = token.clone();
            async move { call(token, "/orders/1").await.0 == 401 }
        })
        .await;
        eprintln!(
            "{name}: Revoke by {kind} to the first refused request: {:?}",
            start.elapsed()
        );
    }

    // Tessera stopped: the gateway fails closed (5xx), never passes.
    asked.stop().await;
    let (status, _, body) = call(t.access_token, "/orders/1").await;
    assert!(
        (500..600).contains(&status),
        "{name} with Tessera stopped: {status} {body}"
    );
    drop(gateway);
    other.stop().await;
    d.cleanup().await;
}

/// The outside tester's ways past a gateway with one valid token for
/// `/orders`: an h2c upgrade (a tunnel on which later requests skip the
/// check), and an absolute-form request line naming the checked host with
/// a `Host` header naming another.
async fn gateway_smuggling(name: &str, addr: SocketAddr, token: &str) {
    let bearer = format!("Bearer {token}");
    let h2c = [
        ("Authorization", bearer.as_str()),
        ("Connection", "Upgrade, HTTP2-Settings"),
        ("Upgrade", "h2c"),
        ("HTTP2-Settings", "AAMAAABkAARAAAAAAAIAAAAA"),
    ];
    let (status, _, body) = get(addr, "/orders/1", "api.test", &h2c).await;
    assert_ne!(status, 101, "{name}: h2c upgrade switched protocols");
    if status == 200 {
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        for hop in ["upgrade", "http2-settings"] {
            assert!(
                seen.get(hop).is_none(),
                "{name}: {hop} reached the application: {seen}"
            );
        }
    }
    let auth = [("Authorization", bearer.as_str())];
    let (status, _, body) = get(addr, "http://api.test/orders/1", "billing.test", &auth).await;
    if status == 200 {
        let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(seen["host"], "api.test", "{name}: absolute form: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_enforces_every_revocation() {
    through("nginx", Gateway::nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_enforces_every_revocation() {
    through("caddy", Gateway::caddy).await;
}

/// Envoy's gRPC `ext_authz`, asked as Envoy asks: the gateway's key in the
/// call's metadata, the client's request in `attributes.request.http`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ext_authz_answers_like_forward_auth() {
    use envoy_types::pb::envoy::service::auth::v3::authorization_client::AuthorizationClient;
    use envoy_types::pb::envoy::service::auth::v3::check_response::HttpResponse;
    use envoy_types::pb::envoy::service::auth::v3::{
        AttributeContext, CheckRequest, attribute_context,
    };
    let d = Deployment::new(Backend::Embedded).await;
    let k = write_files(&d.data_dir);
    let app = start(&d).await;
    let t = issue(&app, &k.ops, "alice", AUDIENCE).await;
    let mut client = AuthorizationClient::new(app.channel.clone());
    let check = |path: &str, token: Option<&str>| {
        let mut headers = std::collections::HashMap::from([
            ("x-tessera-subject".to_owned(), "admin".to_owned()),
            ("x-tessera-role".to_owned(), "root".to_owned()),
            // Underscores: one name to a CGI-style server, and Envoy
            // passes them by default.
            ("x_tessera_scopes".to_owned(), "admin:all".to_owned()),
        ]);
        if let Some(t) = token {
            headers.insert("authorization".into(), format!("Bearer {t}"));
        }
        CheckRequest {
            attributes: Some(AttributeContext {
                request: Some(attribute_context::Request {
                    http: Some(attribute_context::HttpRequest {
                        method: "GET".into(),
                        host: "api.test".into(),
                        path: path.into(),
                        headers,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }
    };

    let ok = client
        .check(as_caller(
            check("/orders/1?q=1", Some(&t.access_token)),
            &k.gw,
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.status.as_ref().unwrap().code, 0);
    let Some(HttpResponse::OkResponse(ok)) = ok.http_response else {
        panic!("no OkHttpResponse: {ok:?}");
    };
    let set: std::collections::HashMap<String, (String, i32, bool)> = ok
        .headers
        .iter()
        .map(|h| {
            let v = h.header.as_ref().unwrap();
            (
                v.key.clone(),
                (v.value.clone(), h.append_action, h.keep_empty_value),
            )
        })
        .collect();
    // OVERWRITE_IF_EXISTS_OR_ADD (2), kept even when empty: the client's
    // "admin" is replaced, whatever the token holds.
    assert_eq!(set["x-tessera-subject"], ("alice".to_owned(), 2, true));
    assert_eq!(set["x-tessera-scopes"].0, "orders:read");
    assert_eq!(set.len(), 5, "{set:?}");
    let mut removed = ok.headers_to_remove.clone();
    removed.sort();
    assert_eq!(removed, ["x-tessera-role", "x_tessera_scopes"]);

    for (path, token, code, http, challenge) in [
        ("/orders/1", None, 16, 401, Some("Bearer")),
        (
            "/orders/1",
            Some("x.y.z"),
            16,
            401,
            Some(r#"Bearer error="invalid_token""#),
        ),
        (
            "/orders/write",
            Some(t.access_token.as_str()),
            7,
            403,
            Some(r#"Bearer error="insufficient_scope", scope="orders:write""#),
        ),
        ("/admin", Some(t.access_token.as_str()), 7, 403, None),
    ] {
        let r = client
            .check(as_caller(check(path, token), &k.gw))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status.as_ref().unwrap().code, code, "{path}");
        let Some(HttpResponse::DeniedResponse(denied)) = r.http_response else {
            panic!("{path}: no DeniedHttpResponse");
        };
        assert_eq!(denied.status.unwrap().code, http, "{path}");
        let www = denied
            .headers
            .iter()
            .find_map(|h| h.header.as_ref().filter(|v| v.key == "www-authenticate"))
            .map(|v| v.value.as_str());
        assert_eq!(www, challenge, "{path}");
    }

    // Not Envoy's shape: INVALID_ARGUMENT naming the field. Not a gateway:
    // refused at the edge.
    let bad = client
        .check(as_caller(CheckRequest::default(), &k.gw))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("attributes.request.http"), "{bad:?}");
    for (who, code) in [
        (k.plain.as_str(), tonic::Code::PermissionDenied),
        ("tsk_nobody", tonic::Code::Unauthenticated),
    ] {
        let refused = client
            .check(as_caller(check("/orders/1", Some(&t.access_token)), who))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code);
    }
    app.stop().await;
    d.cleanup().await;
}

/// A reader of Redis alone (a gateway plugin, the seeds' middleware)
/// following the README's key format sees every kind of revocation: by
/// token id, by family (`sid`), by subject version and by key; and after
/// Redis lost them all, a restart writes them again from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_reader_sees_every_kind_of_revocation() {
    let d = Deployment::new(Backend::Distributed).await;
    let k = write_files(&d.data_dir);
    let app = start(&d).await;
    let fresh = |subject: &'static str| issue(&app, &k.ops, subject, AUDIENCE);
    let (t, f, s, kk, clean) = (
        fresh("t").await,
        fresh("f").await,
        fresh("dora").await,
        fresh("k").await,
        fresh("eve").await,
    );
    let claims = |token: &str| crate::harness::decode_payload(token);
    let pool = deadpool_redis::Config::from_url(&d.redis_url)
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let prefix = d.redis_prefix.clone();
    // The README's reader: any one of four keys denies.
    let denied = |token: String| {
        let (pool, prefix) = (pool.clone(), prefix.clone());
        async move {
            let c = claims(&token);
            let kid = kid_of(&token);
            let mut conn = pool.get().await.unwrap();
            let (jti, sid, kid, min_ver): (bool, bool, bool, Option<u64>) =
                deadpool_redis::redis::pipe()
                    .exists(format!("{prefix}deny:jti:{}", c["jti"].as_str().unwrap()))
                    .exists(format!("{prefix}deny:sid:{}", c["sid"].as_str().unwrap()))
                    .exists(format!("{prefix}deny:kid:{kid}"))
                    .get(format!("{prefix}deny:sub:{}", c["sub"].as_str().unwrap()))
                    .query_async(&mut conn)
                    .await
                    .unwrap();
            jti || sid || kid || min_ver.is_some_and(|v| c["ver"].as_u64().unwrap() < v)
        }
    };
    for token in [&t, &f, &s, &kk, &clean] {
        assert!(!denied(token.access_token.clone()).await);
    }
    revoke(&app, &k.ops, Target::Token(t.access_token.clone())).await;
    revoke(&app, &k.ops, Target::FamilyId(f.family_id.clone())).await;
    revoke(&app, &k.ops, Target::Subject("dora".into())).await;
    revoke(&app, &k.ops, Target::Kid(kid_of(&kk.access_token))).await;
    let all_denied = || async {
        for token in [&t, &f, &s, &kk] {
            if !denied(token.access_token.clone()).await {
                return false;
            }
        }
        true
    };
    // Publishes run after the commit: the keys arrive shortly after.
    eventually("every kind in the deny-list", all_denied).await;
    // The killed key signed every token issued before it, `eve`'s too;
    // one issued after the kill is clean.
    let after = fresh("eve").await;
    assert!(
        !denied(after.access_token.clone()).await,
        "a token after the kill"
    );

    // Redis loses every key; a restarted instance writes them again.
    let mut conn = pool.get().await.unwrap();
    let keys: Vec<String> = deadpool_redis::redis::cmd("KEYS")
        .arg(format!("{prefix}deny:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(keys.len() >= 4, "{keys:?}");
    let () = deadpool_redis::redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
    app.stop().await;
    let app = start(&d).await;
    eventually("the deny-list rewritten from the store", all_denied).await;
    app.stop().await;
    d.cleanup().await;
}
