//! The audit trail: every event, caused through the real RPCs by callers of
//! a callers file, read back as the JSON lines the binary writes, each
//! checked field by field; and no token, refresh token, service key or raw
//! token id anywhere in it. (The binary's sinks: `audit_sink.rs`.)

use crate::harness::as_caller;
use crate::harness::service_key as key;
use crate::harness::{AUDIENCE, Backend, Deployment, start_config};
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    CompromiseKeyRequest, IssuePurposeTokenRequest, IssueRequest, RedeemPurposeTokenRequest,
    RefreshRequest, RevokeRequest, RotateKeysRequest, TokenKind, VerifyRequest,
};
use tessera_telemetry::audit::fingerprint;
use tonic::Request;

/// The audit lines captured so far, parsed.
pub fn events(buffer: &Arc<Mutex<Vec<u8>>>) -> Vec<Value> {
    lines(&String::from_utf8(buffer.lock().unwrap().clone()).unwrap())
}

/// The audit lines the binary wrote to `--audit-log` so far, parsed.
pub fn trail(path: &std::path::Path) -> Vec<Value> {
    lines(&std::fs::read_to_string(path).unwrap_or_default())
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect()
}

/// The events named `event` whose fields include `want`.
pub fn matching<'a>(all: &'a [Value], event: &str, want: &Value) -> Vec<&'a Value> {
    all.iter()
        .filter(|e| e["event"] == event)
        .filter(|e| want.as_object().unwrap().iter().all(|(k, v)| &e[k] == v))
        .collect()
}

/// Waits until `read` (the capture, or the binary's trail) holds `n` events
/// named `event` whose fields include `want`, and returns the `n`th. The
/// bound is [`eventually`]'s: a liveness bound, not a speed target.
///
/// [`eventually`]: crate::harness::eventually
pub async fn nth_event(
    read: impl Fn() -> Vec<Value>,
    n: usize,
    event: &str,
    want: &Value,
) -> Value {
    let found = std::cell::RefCell::new(None);
    crate::harness::eventually(&format!("{n} {event} with {want}"), || {
        let all = read();
        *found.borrow_mut() = matching(&all, event, want).get(n - 1).map(|e| (*e).clone());
        std::future::ready(found.borrow().is_some())
    })
    .await;
    found.into_inner().unwrap()
}

/// Waits for the first event named `event` whose fields include `want`.
pub async fn await_event(read: impl Fn() -> Vec<Value>, event: &str, want: &Value) -> Value {
    nth_event(read, 1, event, want).await
}

/// The one event named `event` whose fields include `want`.
pub fn find<'a>(all: &'a [Value], event: &str, want: &Value) -> &'a Value {
    let matching = matching(all, event, want);
    assert_eq!(matching.len(), 1, "one {event} with {want} in\n{all:#?}");
    matching[0]
}

/// A current-thread runtime: the application's tasks all run on the test's
/// thread, under the subscriber this test sets (no process-wide one).
#[tokio::test]
async fn every_event_names_its_caller_and_carries_no_secret() {
    use tracing_subscriber::prelude::*;
    let (layer, buffer) = tessera::audit_log::capture();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));

    let d = Deployment::new(Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let ((ops, ops_h), (gw, gw_h), (orders, orders_h)) = (key(), key(), key());
    let file = d.data_dir.join("callers.toml");
    std::fs::write(
        &file,
        format!(
            "[[caller]]\nid = \"ops\"\nkey_sha256 = [\"{ops_h}\"]\n\
             rpcs = [\"Issue\", \"Refresh\", \"Revoke\", \"IssuePurposeToken\", \"RedeemPurposeToken\"]\n\
             audiences = [\"*\"]\nrevoke = [\"jti\", \"family\", \"subject\", \"kid\"]\nkeys_admin = true\n\n\
             [[caller]]\nid = \"gateway\"\nkey_sha256 = [\"{gw_h}\"]\nrpcs = [\"Verify\"]\naudiences = [\"{AUDIENCE}\"]\n\n\
             [[caller]]\nid = \"orders\"\nkey_sha256 = [\"{orders_h}\"]\nrpcs = [\"Issue\"]\naudiences = [\"{AUDIENCE}\"]\n"
        ),
    )
    .unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    let (app, stop, handle) = start_config(cfg).await;
    let (mut issuer, mut revocation, mut keys, mut intro) = (
        app.issuer.clone(),
        app.revocation.clone(),
        app.keys.clone(),
        app.introspection.clone(),
    );
    let issue = |subject: &str| IssueRequest {
        subject: subject.into(),
        audience: AUDIENCE.into(),
        ..Default::default()
    };

    // Callers refused: unknown (no key, a wrong key), known without the
    // RPC, known without the audience.
    assert!(issuer.issue(Request::new(issue("x"))).await.is_err());
    assert!(
        issuer
            .issue(as_caller(issue("x"), "tsk_guessed"))
            .await
            .is_err()
    );
    assert!(issuer.issue(as_caller(issue("x"), &gw)).await.is_err());
    let mut billing = issue("x");
    billing.audience = "billing".into();
    assert!(issuer.issue(as_caller(billing, &orders)).await.is_err());

    // A refresh token presented again after the grace window: reuse.
    let t = issuer
        .issue(as_caller(issue("ana"), &ops))
        .await
        .unwrap()
        .into_inner();
    let first_kid = crate::harness::kid_of(&t.access_token);
    let refresh = |token: &str| RefreshRequest {
        refresh_token: token.into(),
        scopes: vec![],
    };
    issuer
        .refresh(as_caller(refresh(&t.refresh_token), &ops))
        .await
        .unwrap();
    d.clock.advance(31);
    assert!(
        issuer
            .refresh(as_caller(refresh(&t.refresh_token), &ops))
            .await
            .is_err()
    );

    // Revocations by token, family and subject.
    let revoke = |target| RevokeRequest {
        target: Some(target),
        reason: "audit test: free text is never written".into(),
    };
    let t2 = issuer
        .issue(as_caller(issue("ben"), &ops))
        .await
        .unwrap()
        .into_inner();
    let t3 = issuer
        .issue(as_caller(issue("cy"), &ops))
        .await
        .unwrap()
        .into_inner();
    revocation
        .revoke(as_caller(
            revoke(Target::Token(t2.access_token.clone())),
            &ops,
        ))
        .await
        .unwrap();
    revocation
        .revoke(as_caller(
            revoke(Target::FamilyId(t3.family_id.clone())),
            &ops,
        ))
        .await
        .unwrap();
    revocation
        .revoke(as_caller(revoke(Target::Subject("cy".into())), &ops))
        .await
        .unwrap();

    // A password reset redeemed: it ends the subject's sessions.
    let reset = issuer
        .issue_purpose_token(as_caller(
            IssuePurposeTokenRequest {
                subject: "pat".into(),
                kind: TokenKind::PasswordReset.into(),
                binding: String::new(),
                ttl: None,
            },
            &ops,
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    issuer
        .redeem_purpose_token(as_caller(
            RedeemPurposeTokenRequest {
                token: reset.clone(),
                kind: TokenKind::PasswordReset.into(),
                binding: String::new(),
                revoke_subject_sessions: true,
            },
            &ops,
        ))
        .await
        .unwrap();

    // Failed verifications: counted, summarised once (here at shutdown).
    for garbage in ["a.b.c", "nope", "x.y.z"] {
        let r = intro
            .verify(as_caller(
                VerifyRequest {
                    token: garbage.into(),
                    expected_audience: AUDIENCE.into(),
                    expected_kind: TokenKind::Access.into(),
                    consistency: tessera_proto::v1::Consistency::Default.into(),
                },
                &gw,
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(!r.valid);
    }

    // Keys: the standby brought forward by ops, activated and retired by
    // the schedule, one
    // compromised by CompromiseKey, one revoked by Revoke{kid}.
    let published = keys
        .rotate_keys(as_caller(RotateKeysRequest::default(), &ops))
        .await
        .unwrap();
    let second = published.into_inner().changed[0].kid.clone();
    d.clock.advance(3600);
    app.tick().await;
    d.clock.advance(25 * 3600 + 60);
    app.tick().await;
    let killed = keys
        .compromise_key(as_caller(
            CompromiseKeyRequest {
                kid: second.clone(),
                reason: "drill".into(),
            },
            &ops,
        ))
        .await
        .unwrap()
        .into_inner();
    let third = killed.new_active_key.unwrap().kid;
    let pending = keys
        .rotate_keys(as_caller(RotateKeysRequest::default(), &ops))
        .await
        .unwrap();
    let fourth = pending.into_inner().changed[0].kid.clone();
    revocation
        .revoke(as_caller(revoke(Target::Kid(fourth.clone())), &ops))
        .await
        .unwrap();

    let _ = stop.send(());
    handle.await.unwrap().unwrap();
    // The operator's rewrap, on the stopped deployment's store.
    let store = tessera_storage::SqlStore::connect(&d.store_url())
        .await
        .unwrap();
    let old = tessera::kek::load(&tessera::kek::KekSource::DataDir, &d.data_dir).unwrap();
    let new = tessera_domain::seal::Kek::from_bytes(&tessera_domain::seal::Kek::generate_bytes())
        .unwrap();
    let moved = tessera_issuer::rewrap(&store, &old, &new, "cli")
        .await
        .unwrap();
    store.close().await;

    let all = events(&buffer);
    println!("{} audit events, e.g. {}", all.len(), all[all.len() / 2]);
    for e in &all {
        let time = e["time"].as_str().unwrap_or_else(|| panic!("no time: {e}"));
        assert!(time.ends_with('Z') && time.len() == 20, "{e}");
        assert!(e["event"].is_string() && e["caller"].is_string(), "{e}");
    }
    let t_ = |s: &str| Value::from(s);
    find(
        &all,
        "key_activated",
        &json!({"caller": "tessera", "kid": first_kid}),
    );
    for (detail, caller, rpc) in [
        ("no credential", "unknown", "Issue"),
        (
            "a credential in `authorization` that matches no caller",
            "unknown",
            "Issue",
        ),
        ("call Issue", "gateway", "Issue"),
        ("issue tokens for audience \"billing\"", "orders", "Issue"),
    ] {
        let e = find(
            &all,
            "caller_denied",
            &json!({"caller": caller, "detail": detail}),
        );
        assert_eq!(e["rpc"], rpc);
        let reason = if caller == "unknown" {
            "ERROR_REASON_CALLER_UNKNOWN"
        } else {
            "ERROR_REASON_CALLER_NOT_ALLOWED"
        };
        assert_eq!(e["reason"], reason);
    }
    find(
        &all,
        "refresh_token_reused",
        &json!({"caller": "ops", "subject": "ana", "family_id": t.family_id}),
    );
    // The reuse revoked the family in the store; the issuer's report of it
    // to the revocation service is the server's own act.
    find(
        &all,
        "family_revoked",
        &json!({"caller": "tessera", "family_id": t.family_id, "newly": false}),
    );
    find(
        &all,
        "token_revoked",
        &json!({"caller": "ops", "jti_sha256": fingerprint(&t2.access_token_id), "newly": true}),
    );
    find(
        &all,
        "family_revoked",
        &json!({"caller": "ops", "family_id": t3.family_id, "newly": true}),
    );
    let cy = find(
        &all,
        "subject_revoked",
        &json!({"caller": "ops", "subject": "cy"}),
    );
    assert_eq!(
        (cy["min_version"].as_u64(), cy["families_revoked"].as_u64()),
        (Some(1), Some(0))
    );
    let redeemed = find(
        &all,
        "purpose_token_redeemed",
        &json!({"caller": "ops", "subject": "pat"}),
    );
    assert_eq!(redeemed["kind"], "password-reset+jwt");
    assert_eq!(redeemed["ends_sessions"], true);
    assert_eq!(redeemed["jti_sha256"].as_str().unwrap().len(), 12);
    // The password reset's end of every session is the redeeming caller's
    // act, named as such (in split roles: "ops via <the issuer's id>").
    find(
        &all,
        "subject_revoked",
        &json!({"caller": "ops", "subject": "pat"}),
    );
    let failures = find(&all, "verify_failures", &json!({"caller": "gateway"}));
    assert_eq!(failures["total"], 3);
    assert_eq!(failures["by_failure"], json!({"malformed": 3}));
    assert_eq!(failures["window_seconds"], 10);
    let p = find(
        &all,
        "key_published",
        &json!({"caller": "ops", "kid": second}),
    );
    assert!(p["activates_at"].as_str().unwrap().ends_with('Z'));
    // The key lifecycle: who did what to which key.
    for (event, caller, kid) in [
        ("key_activated", "tessera", &second),
        ("key_retiring", "tessera", &first_kid),
        ("key_retired", "tessera", &first_kid),
        ("key_compromised", "ops", &second),
        ("key_activated", "ops", &third),
        ("key_compromised", "ops", &fourth),
        ("key_revoked", "ops", &fourth),
    ] {
        find(&all, event, &json!({"caller": caller, "kid": kid}));
    }
    // Each kill is recorded once as compromised (the key manager) and once
    // as revoked (the revocation service's fan-out), whichever RPC asked:
    // `CompromiseKey` (the second key) or `Revoke{kid}` (the fourth).
    for kid in [&second, &fourth] {
        find(&all, "key_compromised", &json!({"kid": kid}));
        find(&all, "key_revoked", &json!({"kid": kid}));
    }
    // The fourth key: published by the kill as the next standby, then
    // brought forward by the operator's rotation (published again, due
    // earlier).
    let fourth_published = matching(
        &all,
        "key_published",
        &json!({"caller": "ops", "kid": fourth}),
    );
    assert_eq!(fourth_published.len(), 2, "{fourth_published:?}");
    let rewrapped = find(&all, "keys_rewrapped", &json!({"caller": "cli"}));
    assert_eq!(rewrapped["sealed_items"].as_u64(), Some(moved as u64));
    assert_eq!(
        (
            rewrapped["from_kek_id"].clone(),
            rewrapped["to_kek_id"].clone()
        ),
        (t_(old.id()), t_(new.id()))
    );
    // Every event kind above, and nothing else.
    let mut kinds: Vec<&str> = all.iter().map(|e| e["event"].as_str().unwrap()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(
        kinds,
        [
            "caller_denied",
            "family_revoked",
            "key_activated",
            "key_compromised",
            "key_published",
            "key_retired",
            "key_retiring",
            "key_revoked",
            "keys_rewrapped",
            "purpose_token_redeemed",
            "refresh_token_reused",
            "subject_revoked",
            "token_revoked",
            "verify_failures",
        ]
    );

    // No secret, and token ids only as fingerprints.
    let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
    for secret in [
        t.access_token.as_str(),
        &t.refresh_token,
        &t2.access_token,
        &t2.access_token_id,
        &reset,
        &ops,
        &gw,
        &orders,
        "tsk_guessed",
        "free text is never written",
    ] {
        assert!(!text.contains(secret), "{secret} in the audit trail");
    }
    d.cleanup().await;
}
