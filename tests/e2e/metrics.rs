//! `GET /metrics` against the real server: every flow moves the series it
//! should, by exactly what it did, on both stores. (Every Verify reason,
//! `invalid_claim` included, is counted against the adversarial suite's
//! table in `adversarial.rs`; shedding in `edge.rs`.)

use crate::harness::{Backend, TestApp, on_both_backends, spawn_app};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{IssuePurposeTokenRequest, TokenKind, VerifyFailure};

on_both_backends!(the_metrics_follow_every_flow);

/// The metrics page, after checking it is served as OpenMetrics.
pub async fn scrape(app: &TestApp) -> String {
    let (status, headers, body) = app.http_get("/metrics", "").await;
    assert_eq!(status, 200);
    let content_type = headers
        .iter()
        .find(|(k, _)| k == "content-type")
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    body
}

/// The value of the sample `series` (its name and labels as written), if
/// exposed.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Like [`value`], for a series that must be there.
fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

fn rpc_count(service: &str, method: &str, code: &str) -> String {
    format!(
        "tessera_rpc_duration_seconds_count{{service=\"tessera.v1.{service}\",method=\"{method}\",code=\"{code}\"}}"
    )
}

async fn the_metrics_follow_every_flow(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let start = scrape(&app).await;
    // The key schedule from the first start: the key signs now, the next
    // one takes over a rotation period (30 days) later.
    let age = must(&start, "tessera_signing_key_age_seconds");
    assert!((0.0..5.0).contains(&age), "{age}");
    let due = must(&start, "tessera_key_rotation_due_in_seconds");
    assert!(
        (30.0 * 86400.0 - 5.0..=30.0 * 86400.0).contains(&due),
        "{due}"
    );

    // A login, a rotation, a grace replay, then reuse.
    let login = app.issue("mia").await;
    assert_eq!(app.verify(&login.access_token).await, Ok(()));
    let next = app.refresh(&login.refresh_token).await.unwrap();
    let replay = app.refresh(&login.refresh_token).await.unwrap();
    assert_eq!(replay.refresh_token, next.refresh_token);
    d.clock.advance(60);
    let reuse = app.refresh(&login.refresh_token).await.unwrap_err();
    assert_eq!(reuse.code(), tonic::Code::Unauthenticated);
    assert_eq!(
        app.verify(&next.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert_eq!(
        app.verify("not.a.token").await,
        Err(VerifyFailure::Malformed)
    );
    // A logout, every session of a subject (two), a jti.
    let logout = app.issue("noa").await;
    assert_eq!(app.revoke(Target::FamilyId(logout.family_id)).await, 1);
    app.issue("ida").await;
    let ida = app.issue("ida").await;
    assert_eq!(app.revoke(Target::Subject("ida".into())).await, 2);
    assert_eq!(app.revoke(Target::Token(ida.access_token)).await, 1);
    // A purpose token.
    app.issuer
        .issue_purpose_token(IssuePurposeTokenRequest {
            subject: "mia".into(),
            kind: TokenKind::PasswordReset.into(),
            binding: String::new(),
            ttl: None,
        })
        .await
        .unwrap();
    // A request refused before the service runs: counted as what it got.
    let bad = app.try_issue("").await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let text = scrape(&app).await;
    for (series, want) in [
        // 4 logins; refreshes: one rotation, one replay.
        (
            r#"tessera_tokens_issued_total{kind="access"}"#.to_owned(),
            6.0,
        ),
        (r#"tessera_tokens_issued_total{kind="refresh"}"#.into(), 5.0),
        (
            r#"tessera_tokens_issued_total{kind="password_reset"}"#.into(),
            1.0,
        ),
        ("tessera_logins_issued_total".into(), 4.0),
        ("tessera_refreshes_total".into(), 2.0),
        ("tessera_refresh_grace_replays_total".into(), 1.0),
        ("tessera_refresh_token_reuse_total".into(), 1.0),
        (
            r#"tessera_families_revoked_total{cause="reuse"}"#.into(),
            1.0,
        ),
        (
            r#"tessera_families_revoked_total{cause="family"}"#.into(),
            1.0,
        ),
        (
            r#"tessera_families_revoked_total{cause="subject"}"#.into(),
            2.0,
        ),
        (r#"tessera_revocations_total{target="family"}"#.into(), 1.0),
        (r#"tessera_revocations_total{target="subject"}"#.into(), 1.0),
        (r#"tessera_revocations_total{target="token"}"#.into(), 1.0),
        (
            r#"tessera_verify_total{result="valid",reason="none"}"#.into(),
            1.0,
        ),
        (
            r#"tessera_verify_total{result="invalid",reason="revoked"}"#.into(),
            1.0,
        ),
        (
            r#"tessera_verify_total{result="invalid",reason="malformed"}"#.into(),
            1.0,
        ),
        (rpc_count("IssuerService", "Issue", "OK"), 4.0),
        (rpc_count("IssuerService", "Issue", "INVALID_ARGUMENT"), 1.0),
        (rpc_count("IssuerService", "Refresh", "OK"), 2.0),
        (
            rpc_count("IssuerService", "Refresh", "UNAUTHENTICATED"),
            1.0,
        ),
        (rpc_count("IntrospectionService", "Verify", "OK"), 3.0),
        (rpc_count("RevocationService", "Revoke", "OK"), 3.0),
        (rpc_count("IssuerService", "IssuePurposeToken", "OK"), 1.0),
    ] {
        assert_eq!(value(&text, &series), Some(want), "{series} in\n{text}");
    }
    // The view holds the reused and the logged-out families, the subject
    // and the jti.
    for (target, at_least) in [("family", 2.0), ("subject", 1.0), ("jti", 1.0)] {
        let series = format!("tessera_revocation_view_entries{{target=\"{target}\"}}");
        assert!(must(&text, &series) >= at_least, "{series} in\n{text}");
    }
    // Only a view reconciled from Postgres has an age; the manual clock
    // moved 60 s since the start.
    let view_age = value(&text, "tessera_revocation_view_age_seconds");
    match backend {
        Backend::Embedded => assert_eq!(view_age, None),
        Backend::Distributed => assert!(view_age.is_some_and(|a| a <= 61.0), "{view_age:?}"),
    }
    // The key aged with the clock.
    assert!(must(&text, "tessera_signing_key_age_seconds") >= 60.0);
    // Nothing a caller sent is in the page.
    assert!(!text.contains(&login.access_token) && !text.contains(&login.refresh_token));
    app.stop().await;
    d.cleanup().await;
}
