use super::*;
use std::time::Duration;
use tessera_domain::clock::ManualClock;
use tessera_domain::revocation::RevocationEvent;

fn metrics() -> (Metrics, ManualClock) {
    let clock = ManualClock::new(1_800_000_000);
    (Metrics::new(Arc::new(clock.clone())), clock)
}

/// The value of the sample line `series` (name and labels as exposed).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn outcomes_and_their_index_agree() {
    for (i, o) in OUTCOMES.iter().enumerate() {
        assert_eq!(outcome_index(*o), i, "{o:?}");
    }
}

#[test]
fn every_verify_outcome_has_its_series() {
    let (m, _) = metrics();
    m.verify(None);
    m.verify(Some(Failure::InvalidClaim));
    m.verify(Some(Failure::Revoked));
    m.verify(Some(Failure::Revoked));
    let text = m.render();
    assert_eq!(
        value(
            &text,
            r#"tessera_verify_total{result="valid",reason="none"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"tessera_verify_total{result="invalid",reason="invalid_claim"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            r#"tessera_verify_total{result="invalid",reason="revoked"}"#
        ),
        Some(2.0)
    );
    // Every failure is exposed from the start, at zero.
    for f in OUTCOMES.iter().flatten() {
        let series = format!(
            "tessera_verify_total{{result=\"invalid\",reason=\"{}\"}}",
            f.as_str()
        );
        assert!(value(&text, &series).is_some(), "{series}");
    }
}

#[test]
fn tokens_families_and_revocations_are_counted() {
    let (m, _) = metrics();
    m.issued();
    m.refreshed(false);
    m.refreshed(true);
    m.purpose_issued(TokenKind::PasswordReset);
    assert_eq!(m.refresh_reused(), 1);
    m.families_revoked(FamilyCause::Subject, 3);
    m.revoked(RevokedKind::Family);
    m.shed();
    let text = m.render();
    for (series, want) in [
        (r#"tessera_tokens_issued_total{kind="access"}"#, 3.0),
        (r#"tessera_tokens_issued_total{kind="refresh"}"#, 2.0),
        (r#"tessera_tokens_issued_total{kind="password_reset"}"#, 1.0),
        (
            r#"tessera_tokens_issued_total{kind="email_verification"}"#,
            0.0,
        ),
        ("tessera_logins_issued_total", 1.0),
        ("tessera_refreshes_total", 2.0),
        ("tessera_refresh_grace_replays_total", 1.0),
        ("tessera_refresh_token_reuse_total", 1.0),
        (r#"tessera_families_revoked_total{cause="reuse"}"#, 1.0),
        (r#"tessera_families_revoked_total{cause="subject"}"#, 3.0),
        (r#"tessera_families_revoked_total{cause="family"}"#, 0.0),
        (r#"tessera_revocations_total{target="family"}"#, 1.0),
        ("tessera_load_shed_total", 1.0),
        ("tessera_purpose_tokens_redeemed_total", 0.0),
        ("tessera_keys_compromised_total", 0.0),
        ("tessera_revocation_fanout_failures_total", 0.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    }
    // OpenMetrics: typed families and the closing marker.
    assert!(text.contains("# TYPE tessera_verify counter"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}

#[test]
fn state_gauges_are_read_when_scraped() {
    let (m, clock) = metrics();
    let text = m.render();
    // Nothing known yet: no made-up zeros.
    assert!(!text.contains("tessera_signing_key_age_seconds"), "{text}");
    assert!(!text.contains("tessera_revocation_view_entries"), "{text}");
    let now = 1_800_000_000;
    m.key_schedule(Some(now - 3600), Some(now + 7200));
    m.view_reconciled(now - 2);
    let view = Arc::new(MemoryRevocations::new());
    view.apply(&RevocationEvent::Jti {
        jti: "j".into(),
        until: now + 60,
    });
    view.apply(&RevocationEvent::Key { kid: "k".into() });
    m.watch_view(view);
    clock.advance(10);
    let text = m.render();
    for (series, want) in [
        ("tessera_signing_key_age_seconds", 3610.0),
        ("tessera_key_rotation_due_in_seconds", 7190.0),
        ("tessera_revocation_view_age_seconds", 12.0),
        (
            "tessera_revocation_view_reconciled_timestamp_seconds",
            (now - 2) as f64,
        ),
        (r#"tessera_revocation_view_entries{target="jti"}"#, 1.0),
        (r#"tessera_revocation_view_entries{target="key"}"#, 1.0),
        (r#"tessera_revocation_view_entries{target="family"}"#, 0.0),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series} in\n{text}");
    }
    assert!(text.contains("# UNIT tessera_signing_key_age_seconds seconds"));
    // The exporters read the same values.
    let sampled = m.sample();
    let age = sampled
        .iter()
        .find(|s| s.name == "tessera_signing_key_age")
        .unwrap();
    assert_eq!(age.kind, Kind::Gauge);
    assert_eq!(age.samples, vec![(vec![], 3610)]);
}

#[test]
fn rpc_latency_is_a_histogram_by_service_method_and_code() {
    let (m, _) = metrics();
    let text = m.render();
    assert!(text.contains("# TYPE tessera_rpc_duration_seconds histogram"));
    assert!(
        !text.contains("tessera_rpc_duration_seconds_count{"),
        "{text}"
    );
    m.rpc().observe_for_test(
        "/tessera.v1.IntrospectionService/Verify",
        0,
        Duration::from_micros(300),
    );
    m.rpc()
        .observe_for_test("/no.such/Method", 12, Duration::from_secs(20));
    let text = m.render();
    let verify = r#"service="tessera.v1.IntrospectionService",method="Verify",code="OK""#;
    assert_eq!(
        value(
            &text,
            &format!("tessera_rpc_duration_seconds_count{{{verify}}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("tessera_rpc_duration_seconds_bucket{{le=\"0.00025\",{verify}}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("tessera_rpc_duration_seconds_bucket{{le=\"0.0005\",{verify}}}")
        ),
        Some(1.0)
    );
    let other = r#"service="other",method="other",code="UNIMPLEMENTED""#;
    assert_eq!(
        value(
            &text,
            &format!("tessera_rpc_duration_seconds_bucket{{le=\"+Inf\",{other}}}")
        ),
        Some(1.0)
    );
}
