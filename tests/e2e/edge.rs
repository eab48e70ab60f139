//! The edge of the port: only known callers, with their rights; TLS and
//! mTLS (with certificates reloaded in place); service keys between the
//! split roles; and the limits (message size, load shedding, per-caller
//! rates, silent connections, the connection cap).

use crate::audit::await_event;
use crate::harness::as_caller as with_key;
use crate::harness::service_key as key;
use crate::harness::{
    AUDIENCE, Backend, Deployment, eventually, on_both_backends, reason, start_config,
};
use crate::pki::TestPki;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tessera::{Application, Config, Role};
use tessera_proto::v1::introspection_service_client::IntrospectionServiceClient;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{IssueRequest, RevokeRequest, RotateKeysRequest, TokenKind, VerifyRequest};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn issue_request(audience: &str) -> IssueRequest {
    IssueRequest {
        subject: "ana".into(),
        audience: audience.into(),
        scopes: vec!["orders:read".into()],
        ..Default::default()
    }
}

fn verify_request(token: &str) -> VerifyRequest {
    VerifyRequest {
        token: token.into(),
        expected_audience: AUDIENCE.into(),
        expected_kind: TokenKind::Access as i32,
        consistency: tessera_proto::v1::Consistency::Default as i32,
    }
}

fn assert_refused(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, why: &str) {
    let s = r.expect_err("the call must be refused");
    assert_eq!(s.code(), code, "{s:?}");
    assert_eq!(reason(&s), why, "{s:?}");
}

/// Keys of the callers of [`callers_file`].
struct Keys {
    orders: String,
    gateway: String,
    ops: String,
    plain: String,
    billing: String,
}

fn callers_file(path: &Path) -> Keys {
    let (orders, orders_h) = key();
    let (gateway, gateway_h) = key();
    let (ops, ops_h) = key();
    let (plain, plain_h) = key();
    let (billing, billing_h) = key();
    let text = format!(
        r#"
[[caller]]
id = "orders"
key_sha256 = ["{orders_h}"]
rpcs = ["Issue", "Refresh", "Revoke"]
audiences = ["{AUDIENCE}"]
extra_claims = ["tenant"]
revoke = ["jti", "family"]

[[caller]]
id = "gateway"
key_sha256 = ["{gateway_h}"]
rpcs = ["Verify"]
audiences = ["{AUDIENCE}"]

[[caller]]
id = "ops"
key_sha256 = ["{ops_h}"]
rpcs = ["Revoke"]
keys_admin = true
revoke = ["jti", "subject", "kid"]

[[caller]]
id = "plain"
key_sha256 = ["{plain_h}"]
rpcs = ["Issue"]
audiences = ["*"]

[[caller]]
id = "billing"
key_sha256 = ["{billing_h}"]
rpcs = ["Revoke"]
audiences = ["billing"]
revoke = ["token"]
"#
    );
    std::fs::write(path, text).unwrap();
    Keys {
        orders,
        gateway,
        ops,
        plain,
        billing,
    }
}

/// Replaces `path` whole (a new file renamed over it), so the watcher never
/// reads it half-written.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Known callers with their rights; the file reloaded in place, each reload
/// read back from the audit trail before what it changed is checked.
async fn callers_and_rights(backend: Backend) {
    use tracing_subscriber::prelude::*;
    let (layer, buffer) = tessera::audit_log::capture();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let trail = || crate::audit::events(&buffer);

    let d = Deployment::new(backend).await;
    let file = d.data_dir.join("callers.toml");
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let k = callers_file(&file);
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file.clone());
    let (app, stop, handle) = start_config(cfg).await;
    let mut issuer = app.issuer.clone();
    let mut intro = app.introspection.clone();

    // No credential, or an unknown one: UNAUTHENTICATED.
    assert_refused(
        issuer.issue(issue_request(AUDIENCE)).await,
        Code::Unauthenticated,
        "ERROR_REASON_CALLER_UNKNOWN",
    );
    assert_refused(
        issuer
            .issue(with_key(issue_request(AUDIENCE), "tsk_guess"))
            .await,
        Code::Unauthenticated,
        "ERROR_REASON_CALLER_UNKNOWN",
    );
    // Known, but lacking the right: PERMISSION_DENIED, naming it.
    let token = issuer
        .issue(with_key(issue_request(AUDIENCE), &k.orders))
        .await
        .unwrap()
        .into_inner();
    for (r, what) in [
        (
            issuer
                .issue(with_key(issue_request("billing"), &k.orders))
                .await,
            "billing",
        ),
        (
            issuer
                .issue(with_key(issue_request(AUDIENCE), &k.gateway))
                .await,
            "call Issue",
        ),
    ] {
        let s = r.unwrap_err();
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert_eq!(reason(&s), "ERROR_REASON_CALLER_NOT_ALLOWED");
        assert!(s.message().contains(what), "{s:?}");
    }
    let mut tenant = issue_request(AUDIENCE);
    tenant.extra_claims = Some(tessera_api::json_to_struct(
        serde_json::json!({"tenant": "acme"}).as_object().unwrap(),
    ));
    issuer
        .issue(with_key(tenant.clone(), &k.orders))
        .await
        .unwrap();
    assert_refused(
        issuer.issue(with_key(tenant, &k.plain)).await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );

    // Verify needs a known caller granted it, by default.
    assert_refused(
        intro.verify(verify_request(&token.access_token)).await,
        Code::Unauthenticated,
        "ERROR_REASON_CALLER_UNKNOWN",
    );
    assert_refused(
        intro
            .verify(with_key(verify_request(&token.access_token), &k.orders))
            .await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );
    let v = intro
        .verify(with_key(verify_request(&token.access_token), &k.gateway))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    // Verify is within the caller's audiences: the gateway may not read
    // another audience's tokens, nor ask about them.
    let mut other = verify_request(&token.access_token);
    other.expected_audience = "billing".into();
    assert_refused(
        intro.verify(with_key(other, &k.gateway)).await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );

    // Revocation rights by target.
    let mut revocation = app.revocation.clone();
    let revoke = |target| RevokeRequest {
        target: Some(target),
        reason: "test".into(),
    };
    assert_refused(
        revocation
            .revoke(with_key(revoke(Target::Subject("ana".into())), &k.orders))
            .await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );
    // With the `token` right, a token given whole is reached only through
    // its audience: billing may not end an orders-api token; the `jti`
    // right is named and reaches every audience (ops, of no audience).
    assert_refused(
        revocation
            .revoke(with_key(
                revoke(Target::Token(token.access_token.clone())),
                &k.billing,
            ))
            .await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );
    let jti = v.claims.as_ref().unwrap().token_id.clone();
    let exp = v.claims.as_ref().unwrap().expires_at;
    let by_jti = tessera_proto::v1::JtiTarget {
        jti,
        expires_at: exp,
    };
    assert_refused(
        revocation
            .revoke(with_key(revoke(Target::Jti(by_jti.clone())), &k.billing))
            .await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );
    revocation
        .revoke(with_key(revoke(Target::Jti(by_jti)), &k.ops))
        .await
        .unwrap();
    revocation
        .revoke(with_key(
            revoke(Target::Token(token.access_token.clone())),
            &k.ops,
        ))
        .await
        .unwrap();
    revocation
        .revoke(with_key(
            revoke(Target::Token(token.access_token.clone())),
            &k.orders,
        ))
        .await
        .unwrap();

    // Key administration: only `keys_admin`.
    let mut keys = app.keys.clone();
    assert_refused(
        keys.rotate_keys(with_key(RotateKeysRequest::default(), &k.orders))
            .await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );
    keys.rotate_keys(with_key(RotateKeysRequest::default(), &k.ops))
        .await
        .unwrap();

    // Health and the JWKS stay open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(app.channel.clone());
    let h = health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await;
    assert!(h.is_ok(), "{h:?}");
    assert_eq!(app.http_get("/.well-known/jwks.json", "").await.0, 200);

    // A change to the file is picked up without a restart: once the
    // reload is in the trail, the new caller is in.
    let (newcomer, newcomer_h) = key();
    let mut text = std::fs::read_to_string(&file).unwrap();
    text.push_str(&format!(
        "\n[[caller]]\nid = \"newcomer\"\nkey_sha256 = [\"{newcomer_h}\"]\nrpcs = [\"Issue\"]\naudiences = [\"{AUDIENCE}\"]\n"
    ));
    assert_refused(
        issuer
            .issue(with_key(issue_request(AUDIENCE), &newcomer))
            .await,
        Code::Unauthenticated,
        "ERROR_REASON_CALLER_UNKNOWN",
    );
    replace_file(&file, &text);
    let reload = json!({"caller": "tessera", "trigger": "modified"});
    let mut want = reload.clone();
    want["result"] = "ok".into();
    want["callers"] = 6.into();
    await_event(trail, "callers_reloaded", &want).await;
    issuer
        .issue(with_key(issue_request(AUDIENCE), &newcomer))
        .await
        .expect("the new caller is admitted");
    // A broken file is refused (its line named) while the one in force
    // stays: checked once its refusal is in the trail.
    let broken = "[[caller]]\nid = \"x\"\nrpcs = [\"Everything\"]\n";
    let line = tessera_domain::callers::Callers::parse(broken)
        .unwrap_err()
        .line;
    replace_file(&file, broken);
    let mut want = reload.clone();
    want["result"] = "rejected".into();
    want["line"] = line.into();
    await_event(trail, "callers_reloaded", &want).await;
    issuer
        .issue(with_key(issue_request(AUDIENCE), &newcomer))
        .await
        .expect("the previous callers file stays in force");
    issuer
        .issue(with_key(issue_request(AUDIENCE), &k.orders))
        .await
        .unwrap();
    // The file in force put back: it reads as unchanged.
    replace_file(&file, &text);
    let mut want = reload.clone();
    want["result"] = "unchanged".into();
    want["callers"] = 6.into();
    await_event(trail, "callers_reloaded", &want).await;
    issuer
        .issue(with_key(issue_request(AUDIENCE), &newcomer))
        .await
        .expect("the callers file in force is the same");
    // Three reloads, each written once; never the file's contents.
    let reloads: Vec<_> = trail()
        .into_iter()
        .filter(|e| e["event"] == "callers_reloaded")
        .collect();
    assert_eq!(reloads.len(), 3, "{reloads:#?}");
    let raw = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    assert!(
        !raw.contains(&newcomer_h) && !raw.contains("Everything"),
        "{raw}"
    );

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

on_both_backends!(current_thread: callers_and_rights);

on_both_backends!(
    tls_and_client_certificates,
    oversize_messages_and_load_shedding,
    a_flooding_caller_does_not_starve_another,
);

/// The split roles on Postgres + Redis, each with a callers file and its own
/// service key with the narrowest rights: the verifier learns keys and
/// forwards key kills; the issuer reports revocations. A verifier's key
/// cannot rotate keys. What one service does for a caller is audited by the
/// other with both names ("ops via tessera-verifier"). A current-thread
/// runtime: both services' audit events reach this test's subscriber.
#[tokio::test]
async fn split_roles_call_each_other_with_service_keys() {
    use tracing_subscriber::prelude::*;
    let (layer, buffer) = tessera::audit_log::capture();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let d = Deployment::new(Backend::Distributed).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let (issuer_key, issuer_h) = key();
    let (verifier_key, verifier_h) = key();
    let (app_key, app_h) = key();
    let (ops_key, ops_h) = key();
    let file = d.data_dir.join("callers.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[access]
jwks = "caller"

[[caller]]
id = "ops"
key_sha256 = ["{ops_h}"]
rpcs = ["Revoke"]
revoke = ["kid"]

[[caller]]
id = "tessera-issuer"
key_sha256 = ["{issuer_h}"]
rpcs = ["Revoke"]
audiences = ["*"]
revoke = ["family", "subject", "kid"]
relay = true

[[caller]]
id = "tessera-verifier"
key_sha256 = ["{verifier_h}"]
rpcs = ["GetJwks", "WatchKeys", "CompromiseKey"]
relay = true

[[caller]]
id = "orders"
key_sha256 = ["{app_h}"]
rpcs = ["Issue", "Refresh", "Verify"]
audiences = ["{AUDIENCE}"]
"#
        ),
    )
    .unwrap();
    let port = crate::harness::free_port();
    let mut cfg = d.config();
    cfg.role = Role::Issuer;
    cfg.revocation_endpoint = Some(format!("http://127.0.0.1:{port}"));
    cfg.edge.callers_file = Some(file.clone());
    cfg.edge.service_key = Some(tessera_domain::Secret::new(issuer_key.into_bytes()));
    let (issuer, istop, ihandle) = start_config(cfg).await;

    // Without its key the verifier cannot learn the keys: it refuses to
    // start, naming the cause.
    let mut cfg = d.config();
    cfg.role = Role::Introspection;
    cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
    cfg.issuer_endpoint = Some(format!("http://{}", issuer.addr));
    cfg.edge.callers_file = Some(file.clone());
    let e = Application::build(cfg.clone()).await.unwrap_err();
    assert!(e.to_string().contains("Unauthenticated"), "{e}");
    cfg.edge.service_key = Some(tessera_domain::Secret::new(
        verifier_key.clone().into_bytes(),
    ));
    let (verifier, vstop, vhandle) = start_config(cfg).await;

    // A login, then reuse of its refresh token: the issuer reports the
    // family to the verifier with its own key; the token is rejected.
    let mut iss = issuer.issuer.clone();
    let login = iss
        .issue(with_key(issue_request(AUDIENCE), &app_key))
        .await
        .unwrap()
        .into_inner();
    let mut intro = verifier.introspection.clone();
    let valid = intro
        .verify(with_key(verify_request(&login.access_token), &app_key))
        .await
        .unwrap()
        .into_inner();
    assert!(valid.valid, "{valid:?}");
    let refresh = |t: &str| tessera_proto::v1::RefreshRequest {
        refresh_token: t.into(),
        ..Default::default()
    };
    iss.refresh(with_key(refresh(&login.refresh_token), &app_key))
        .await
        .unwrap();
    // Past the grace window, a second use of the old token is reuse.
    d.clock.advance(60);
    let reused = iss
        .refresh(with_key(refresh(&login.refresh_token), &app_key))
        .await;
    assert_eq!(reused.unwrap_err().code(), Code::Unauthenticated);
    eventually("the reused family is rejected at the verifier", || {
        let mut i = intro.clone();
        let (t, k) = (login.access_token.clone(), app_key.clone());
        async move {
            let r = i.verify(with_key(verify_request(&t), &k)).await;
            r.is_ok_and(|r| !r.into_inner().valid)
        }
    })
    .await;

    // The issuer's report reached the revocation service with its key (not
    // only the store's catch-up): recorded there as the issuer's act.
    crate::audit::await_event(
        || crate::audit::events(&buffer),
        "family_revoked",
        &serde_json::json!({"caller": "tessera-issuer", "family_id": login.family_id}),
    )
    .await;

    // The verifier's own key cannot rotate keys on the issuer.
    let mut keys = KeyServiceClient::new(issuer.channel.clone());
    assert_refused(
        keys.rotate_keys(with_key(RotateKeysRequest::default(), &verifier_key))
            .await,
        Code::PermissionDenied,
        "ERROR_REASON_CALLER_NOT_ALLOWED",
    );

    // ops kills the signing key at the verifier, which forwards the kill:
    // the issuer's audit names ops and the verifier that relayed it.
    let kid = valid.claims.as_ref().unwrap().kid.clone();
    let kill = RevokeRequest {
        target: Some(Target::Kid(kid.clone())),
        reason: "test".into(),
    };
    verifier
        .revocation
        .clone()
        .revoke(with_key(kill, &ops_key))
        .await
        .unwrap();
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let compromised = events
        .iter()
        .find(|e| e["event"] == "key_compromised" && e["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("no key_compromised in {events:#?}"));
    assert_eq!(compromised["caller"], "ops via tessera-verifier");
    // The verifier that handled it names ops (the issuer's fan-out of the
    // kill back to the revocation service is its own act).
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "key_revoked" && e["caller"] == "ops"),
        "{events:#?}"
    );

    let _ = vstop.send(());
    let _ = vhandle.await;
    let _ = istop.send(());
    let _ = ihandle.await;
    drop((issuer, verifier));
    d.cleanup().await;
}

/// Serves `cfg` with no test client (the test connects its own way).
async fn serve(
    cfg: Config,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tessera::AppError>>,
) {
    let app = Application::build(cfg).await.expect("build the app");
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(app.run(async {
        let _ = rx.await;
    }));
    (addr, tx, handle)
}

pub(crate) async fn tls_channel(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(
            std::fs::read(cert).unwrap(),
            std::fs::read(key).unwrap(),
        ));
    }
    Channel::from_shared(format!("https://localhost:{}", addr.port()))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

/// TLS and optional mTLS: a client certificate named in the callers file
/// is a caller; a client without one (or a key) is unknown; plain TCP to the
/// TLS port gets nowhere; a replaced certificate is served without restart.
async fn tls_and_client_certificates(backend: Backend) {
    let d = Deployment::new(backend).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let pki = TestPki::generate();
    let dir = tempdir(&d);
    let (cert, key_file) = (dir.join("server.pem"), dir.join("server.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key_file).unwrap();
    let file = dir.join("callers.toml");
    std::fs::write(
        &file,
        "[[caller]]\nid = \"ops\"\ntls_names = [\"tessera-test-client\"]\nkeys_admin = true\n",
    )
    .unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    cfg.edge.tls = Some(tessera_edge::tls::TlsFiles {
        cert: cert.clone(),
        key: key_file.clone(),
        client_ca: Some(pki.ca.clone()),
        client_auth: tessera_edge::tls::ClientAuth::Optional,
    });
    let (addr, stop, handle) = serve(cfg).await;

    let with_cert = tls_channel(addr, &pki.ca, Some((&pki.client_cert, &pki.client_key)))
        .await
        .unwrap();
    KeyServiceClient::new(with_cert)
        .rotate_keys(RotateKeysRequest::default())
        .await
        .expect("the client certificate names a key administrator");
    let without = tls_channel(addr, &pki.ca, None).await.unwrap();
    assert_refused(
        KeyServiceClient::new(without.clone())
            .rotate_keys(RotateKeysRequest::default())
            .await,
        Code::Unauthenticated,
        "ERROR_REASON_CALLER_UNKNOWN",
    );
    // Health is open, over TLS.
    tonic_health::pb::health_client::HealthClient::new(without)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    // A client that does not trust the server's CA, and a plain client,
    // get nowhere.
    let wrong = tls_channel(addr, &pki.other_ca, None).await;
    assert!(wrong.is_err(), "a server certificate from an untrusted CA");
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await;
    if let Ok(ch) = plain {
        let r = IntrospectionServiceClient::new(ch)
            .verify(VerifyRequest::default())
            .await;
        assert!(r.is_err(), "plain HTTP/2 on the TLS port: {r:?}");
    }

    // Replace the certificate and key with ones from another CA: served
    // without a restart.
    let next = TestPki::generate();
    std::fs::copy(&next.server_key, &key_file).unwrap();
    std::fs::copy(&next.server_cert, &cert).unwrap();
    eventually("the new certificate is served", || {
        let ca = next.ca.clone();
        async move { tls_channel(addr, &ca, None).await.is_ok() }
    })
    .await;
    assert!(tls_channel(addr, &pki.ca, None).await.is_err());

    let _ = stop.send(());
    let _ = handle.await;
    d.cleanup().await;
}

fn tempdir(d: &Deployment) -> std::path::PathBuf {
    let dir = d.data_dir.join("edge");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Off loopback the port must encrypt and know its callers, unless
/// insecure mode is named; and a wildcard address never becomes the
/// issuer (`http://0.0.0.0:…`): without --issuer the start is refused,
/// naming it, and nothing is remembered.
#[tokio::test]
async fn non_loopback_needs_tls_and_callers() {
    let d = Deployment::new(Backend::Embedded).await;
    let mut cfg = d.config();
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let e = Application::build(cfg.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--tls-cert") && e.contains("--callers-file"),
        "{e}"
    );
    cfg.allow_insecure_listen = true;
    let mut derived = cfg.clone();
    derived.issuer_set = false;
    derived.policy.issuer = "http://0.0.0.0:50051".into();
    let e = Application::build(derived).await.unwrap_err().to_string();
    assert!(e.contains("--issuer") && e.contains("0.0.0.0"), "{e}");
    assert!(
        !d.data_dir.join(tessera::issuer_file::FILE).exists(),
        "a refused issuer was remembered"
    );
    let app = Application::build(cfg).await.unwrap();
    drop(app);
    d.cleanup().await;
}

/// A message over the RPC's limit is refused before it is read, with the
/// field named; past the in-flight bound calls are shed at once while
/// health answers.
async fn oversize_messages_and_load_shedding(backend: Backend) {
    let d = Deployment::new(backend).await;
    let mut cfg = d.config();
    cfg.edge.max_in_flight = 2;
    let (app, stop, handle) = start_config(cfg).await;
    for size in [64 * 1024, 5 << 20] {
        let s = app
            .introspection
            .clone()
            .verify(verify_request(&"a".repeat(size)))
            .await
            .unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{size}: {s:?}");
        assert_eq!(reason(&s), "ERROR_REASON_FIELD_INVALID");
        assert!(s.message().contains("`request`"), "{s:?}");
    }

    // 64 Issue calls at once against a bound of 2: some are shed.
    let calls = (0..64).map(|_| {
        let mut i = app.issuer.clone();
        tokio::spawn(async move { i.issue(issue_request(AUDIENCE)).await })
    });
    let mut shed = 0;
    let mut ok = 0;
    for c in calls.collect::<Vec<_>>() {
        match c.await.unwrap() {
            Ok(_) => ok += 1,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                assert_eq!(reason(&s), "ERROR_REASON_OVERLOADED");
                shed += 1;
            }
        }
    }
    eprintln!("64 concurrent Issue calls, 2 in flight allowed: {ok} served, {shed} shed");
    assert!(shed > 0 && ok >= 2, "{ok} served, {shed} shed");
    let metrics = app.http_get("/metrics", "").await.2;
    assert!(
        metrics.contains(&format!("tessera_load_shed_total {shed}")),
        "{metrics}"
    );
    // The latency layer sits before shedding: every shed call is timed.
    let series = r#"tessera_rpc_duration_seconds_count{service="tessera.v1.IssuerService",method="Issue",code="RESOURCE_EXHAUSTED"}"#;
    assert_eq!(
        crate::metrics::value(&metrics, series),
        Some(f64::from(shed)),
        "{metrics}"
    );

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

/// One caller flooding past its rate is refused (`RESOURCE_EXHAUSTED`,
/// `ERROR_REASON_OVERLOADED`) while the other caller's calls, every one made
/// during the flood, all succeed. Nothing here is timed: the calm caller
/// starts once the flood has been refused and the flood lasts until the
/// calm caller is done, and the flood must be refused meanwhile too.
async fn a_flooding_caller_does_not_starve_another(backend: Backend) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let d = Deployment::new(backend).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let (flood_key, flood_h) = key();
    let (calm_key, calm_h) = key();
    let file = d.data_dir.join("callers.toml");
    std::fs::write(
        &file,
        format!(
            "[[caller]]\nid = \"flood\"\nkey_sha256 = [\"{flood_h}\"]\nrpcs = [\"Verify\"]\naudiences = [\"*\"]\nrate_per_second = 100\nburst = 20\n\n[[caller]]\nid = \"calm\"\nkey_sha256 = [\"{calm_h}\"]\nrpcs = [\"Issue\", \"Verify\"]\naudiences = [\"*\"]\nrate_per_second = 100\n"
        ),
    )
    .unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    let (app, stop, handle) = start_config(cfg).await;
    let token = app
        .issuer
        .clone()
        .issue(with_key(issue_request(AUDIENCE), &calm_key))
        .await
        .unwrap()
        .into_inner()
        .access_token;

    let flooding = Arc::new(AtomicBool::new(true));
    let (served, refused) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let (i, t, k) = (app.introspection.clone(), token.clone(), flood_key.clone());
            let (flooding, served, refused) = (flooding.clone(), served.clone(), refused.clone());
            tokio::spawn(async move {
                while flooding.load(Ordering::Relaxed) {
                    match i.clone().verify(with_key(verify_request(&t), &k)).await {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(s) => {
                            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
                            assert_eq!(reason(&s), "ERROR_REASON_OVERLOADED", "{s:?}");
                            refused.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            })
        })
        .collect();
    eventually("the flooder is refused", || {
        let refused = refused.load(Ordering::Relaxed);
        async move { refused > 0 }
    })
    .await;
    let refused_before = refused.load(Ordering::Relaxed);
    let mut calm = app.introspection.clone();
    for n in 0..50 {
        let r = calm
            .verify(with_key(verify_request(&token), &calm_key))
            .await
            .unwrap_or_else(|s| panic!("calm call {n} during the flood: {s:?}"))
            .into_inner();
        assert!(r.valid, "calm call {n}: {r:?}");
        // Paced (not timed): the calls spread over the flood.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused_during = refused.load(Ordering::Relaxed) - refused_before;
    flooding.store(false, Ordering::Relaxed);
    for f in flooders {
        f.await
            .expect("every refusal of the flooder is RESOURCE_EXHAUSTED");
    }
    let (served, refused) = (
        served.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {served} Verify calls of the flooder served (100/s allowed), {refused} refused ({refused_during} while the calm caller's 50 calls were all served)"
    );
    assert!(served > 0, "the flooder is served up to its rate");
    assert!(
        refused_during > 0,
        "the flood was refused while the calm caller called: {refused} refusals, none then"
    );

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

/// A health check on a new connection from 127.0.0.1: it is served.
async fn health_from_a_new_connection(addr: std::net::SocketAddr) {
    let ch = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("a new connection is accepted");
    tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("and served");
}

/// The embedded app with these connection limits: (all, per peer address,
/// handshake time).
async fn serve_capped(
    max: usize,
    per_peer: usize,
    handshake: Duration,
) -> (
    Deployment,
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), tessera::AppError>>,
) {
    let d = Deployment::new(Backend::Embedded).await;
    let mut cfg = d.config();
    cfg.edge.conn = tessera_edge::net::ConnLimits {
        max_connections: max,
        max_connections_per_peer: per_peer,
        handshake_timeout: handshake,
    };
    let (addr, stop, handle) = serve(cfg).await;
    (d, addr, stop, handle)
}

/// Connections that never speak are closed after the handshake timeout,
/// and while the cap is full new ones wait; then they are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_and_capped() {
    use tokio::io::AsyncReadExt;
    let (d, addr, stop, handle) = serve_capped(4, 4, Duration::from_millis(500)).await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let started = Instant::now();
    for s in &mut silent {
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("a silent connection is closed by the server");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    eprintln!("4 silent connections closed after {:?}", started.elapsed());
    // The cap is free again: a real client is served.
    health_from_a_new_connection(addr).await;
    let _ = stop.send(());
    let _ = handle.await;
    d.cleanup().await;
}

/// One address cannot hold every connection: past its share, its new
/// connections are closed at once, and a client at another address (here
/// 127.0.0.1 beside a hog at 127.0.0.2) still connects and is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_every_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (d, addr, stop, handle) = serve_capped(16, 4, Duration::from_secs(10)).await;
    let mut hog = Vec::new();
    for _ in 0..10 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        // The HTTP/2 preface: a connection that speaks, then holds.
        let _ = s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        hog.push(s);
    }
    let (mut held, mut closed) = (0, 0);
    for s in &mut hog {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            // The server's SETTINGS: held open.
            Ok(Ok(n)) if n > 0 => held += 1,
            Ok(_) => closed += 1,
            Err(_) => panic!("each connection is either answered or closed"),
        }
    }
    assert_eq!(
        (held, closed),
        (4, 6),
        "4 held from one address, the rest closed"
    );
    health_from_a_new_connection(addr).await;
    drop(hog);
    let _ = stop.send(());
    let _ = handle.await;
    d.cleanup().await;
}

/// `tessera callers add` prints a key once and an entry that admits it.
#[test]
fn callers_add_prints_a_key_and_its_entry() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "callers",
            "add",
            "orders",
            "--rpcs",
            "Issue,Refresh",
            "--audiences",
            AUDIENCE,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text.lines().find(|l| l.starts_with("tsk_")).unwrap();
    crate::harness::record_secrets(&[key.to_owned()]);
    let entry: String = text
        .lines()
        .skip_while(|l| !l.starts_with("[[caller]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let callers = tessera_domain::callers::Callers::parse(&entry).unwrap();
    let c = callers.by_key(key).unwrap();
    assert!(c.id == "orders" && c.may_call("Refresh") && !c.may_call("Revoke"));
    assert!(
        !entry.contains(key),
        "the file holds the hash, never the key"
    );
    assert!(!text.contains("reach every audience"), "{text}");
    // The named revocation rights reach every audience: it says so.
    let named = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args([
            "callers",
            "add",
            "ops",
            "--rpcs",
            "Revoke,WatchRevocations",
            "--revoke",
            "jti,family,kid",
        ])
        .output()
        .unwrap();
    let named = String::from_utf8(named.stdout).unwrap();
    if let Some(k) = named.lines().find(|l| l.starts_with("tsk_")) {
        crate::harness::record_secrets(&[k.to_owned()]);
    }
    let note = named
        .lines()
        .find(|l| l.contains("reach every audience"))
        .unwrap();
    assert!(
        note.contains("jti, kid") && !note.contains("family"),
        "{note}"
    );
    assert!(
        named.contains("WatchRevocations streams every audience"),
        "{named}"
    );
    assert!(!text.contains("WatchRevocations"), "{text}");
    // The rights that are flags: STRONG Verify and key administration.
    let flags = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["callers", "add", "admin", "--verify-strong", "--keys-admin"])
        .output()
        .unwrap();
    let flags = String::from_utf8(flags.stdout).unwrap();
    let k = flags.lines().find(|l| l.starts_with("tsk_")).unwrap();
    crate::harness::record_secrets(&[k.to_owned()]);
    let entry: String = flags
        .lines()
        .skip_while(|l| !l.starts_with("[[caller]]"))
        .map(|l| format!("{l}\n"))
        .collect();
    let parsed = tessera_domain::callers::Callers::parse(&entry).unwrap();
    let admin = parsed.by_key(k).unwrap();
    assert!(
        admin.may_verify_strong() && admin.may_call("ListKeys"),
        "{entry}"
    );
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["callers", "add", "x", "--rpcs", "Everything"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown rpc"));
}
