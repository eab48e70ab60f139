//! Reloads end what they revoke: a `WatchRevocations` stream whose caller a
//! reload of the callers file removes, or whose right it withdraws, ends at
//! once (`UNAUTHENTICATED` / `PERMISSION_DENIED`) while another caller's
//! stream goes on; and every stream ends with `OK` after its maximum
//! lifetime, so clients reconnect (with `after_id`).

use crate::harness::as_caller;
use crate::harness::service_key as key;
use crate::harness::{Backend, Deployment, start_config};
use std::time::Duration;
use tessera_proto::v1::{WatchKeysRequest, WatchRevocationsRequest};
use tonic::Code;

fn entry(id: &str, hash: &str, rpcs: &str) -> String {
    format!("[[caller]]\nid = \"{id}\"\nkey_sha256 = [\"{hash}\"]\nrpcs = [{rpcs}]\n\n")
}

/// The next message of `s`, which must come (or the stream end) in time.
async fn next<T>(s: &mut tonic::Streaming<T>) -> Result<Option<T>, tonic::Status> {
    tokio::time::timeout(Duration::from_secs(15), s.message())
        .await
        .expect("the stream ends within one reload")
}

/// Replaces `path` whole (a rename), so the watcher never reads half.
fn replace(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_end_the_streams_they_revoke() {
    let d = Deployment::new(Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let ((a, a_h), (b, b_h), (c, c_h)) = (key(), key(), key());
    let watch = "\"WatchRevocations\"";
    let file = d.data_dir.join("callers.toml");
    let all = [
        entry("app-a", &a_h, watch),
        entry("app-b", &b_h, watch),
        entry("app-c", &c_h, watch),
    ];
    replace(&file, &all.concat());
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file.clone());
    let (app, stop, handle) = start_config(cfg).await;
    let mut streams = Vec::new();
    for k in [&a, &b, &c] {
        let request = as_caller(WatchRevocationsRequest { after_id: 0 }, k);
        streams.push(
            app.revocation
                .clone()
                .watch_revocations(request)
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let [mut sa, mut sb, mut sc] = <[_; 3]>::try_from(streams).ok().unwrap();

    // app-b removed, app-c's right withdrawn; app-a untouched.
    let reloaded = [
        entry("app-a", &a_h, watch),
        entry("app-c", &c_h, "\"Issue\""),
    ];
    replace(&file, &reloaded.concat());
    let b_end = next(&mut sb).await.unwrap_err();
    assert_eq!(b_end.code(), Code::Unauthenticated, "{b_end:?}");
    assert_eq!(
        crate::harness::reason(&b_end),
        "ERROR_REASON_CALLER_UNKNOWN"
    );
    let c_end = next(&mut sc).await.unwrap_err();
    assert_eq!(c_end.code(), Code::PermissionDenied, "{c_end:?}");
    assert_eq!(
        crate::harness::reason(&c_end),
        "ERROR_REASON_CALLER_NOT_ALLOWED"
    );
    // app-a's stream is still open: nothing arrives, nor does it end.
    let a_next = tokio::time::timeout(Duration::from_millis(500), sa.message()).await;
    assert!(a_next.is_err(), "app-a's stream goes on: {a_next:?}");
    // And app-b can no longer open one.
    let again = as_caller(WatchRevocationsRequest { after_id: 0 }, &b);
    let s = app
        .revocation
        .clone()
        .watch_revocations(again)
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::Unauthenticated);

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_after_its_lifetime() {
    let d = Deployment::new(Backend::Embedded).await;
    let mut cfg = d.config();
    cfg.edge.stream_lifetime = Duration::from_secs(1);
    let (app, stop, handle) = start_config(cfg).await;
    let mut s = app
        .keys
        .clone()
        .watch_keys(WatchKeysRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = s.message().await.unwrap();
    assert!(first.is_some(), "the key set comes first");
    let end = tokio::time::timeout(Duration::from_secs(15), s.message())
        .await
        .expect("the stream ends after its lifetime");
    assert!(matches!(end, Ok(None)), "it ends with OK: {end:?}");

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

/// A replaced client CA closes the connections whose certificates it no
/// longer verifies (the calls on them fail; a new handshake is refused),
/// audited as `connection_closed`; before the reload they were served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_client_ca_closes_the_connections_it_no_longer_trusts() {
    use tessera_proto::v1::ListKeysRequest;
    use tessera_proto::v1::key_service_client::KeyServiceClient;
    let d = Deployment::new(Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let pki = crate::pki::TestPki::generate();
    let client_ca = d.data_dir.join("client-ca.pem");
    std::fs::copy(&pki.ca, &client_ca).unwrap();
    let file = d.data_dir.join("callers.toml");
    let entry =
        "[[caller]]\nid = \"ops\"\ntls_names = [\"tessera-test-client\"]\nkeys_admin = true\n";
    std::fs::write(&file, entry).unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    cfg.edge.tls = Some(tessera_edge::tls::TlsFiles {
        cert: pki.server_cert.clone(),
        key: pki.server_key.clone(),
        client_ca: Some(client_ca.clone()),
        client_auth: tessera_edge::tls::ClientAuth::Optional,
    });
    let (app, stop, handle) = start_config(cfg).await;
    let identity = Some((pki.client_cert.as_path(), pki.client_key.as_path()));
    let channel = crate::edge::tls_channel(app.addr, &pki.ca, identity)
        .await
        .unwrap();
    let mut keys = KeyServiceClient::new(channel);
    keys.list_keys(ListKeysRequest {})
        .await
        .expect("served before the reload");

    let other = std::fs::read(&pki.other_ca).unwrap();
    replace(&client_ca, std::str::from_utf8(&other).unwrap());
    crate::harness::eventually("the old connection is closed", || {
        let mut k = keys.clone();
        async move { k.list_keys(ListKeysRequest {}).await.is_err() }
    })
    .await;
    let again = crate::edge::tls_channel(app.addr, &pki.ca, identity).await;
    let refused = match again {
        Err(_) => true,
        Ok(ch) => KeyServiceClient::new(ch)
            .list_keys(ListKeysRequest {})
            .await
            .is_err(),
    };
    assert!(
        refused,
        "a new connection with the distrusted certificate is refused"
    );

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}
