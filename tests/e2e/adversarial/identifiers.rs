//! Configuration and identifiers that cannot mislead:
//! identifiers that would disguise themselves in logs and the audit trail
//! are bad requests naming their field, and `--extra-claims` naming a
//! reserved claim stops the server from starting.

use crate::harness::{AUDIENCE, Backend, Deployment, on_both_backends, spawn_app};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{IssueRequest, RevokeRequest};
use tonic::Code;
use tonic_types::StatusExt;

on_both_backends!(
    identifiers_refuse_invisible_and_control_characters,
    reserved_extra_claims_refuse_to_start,
);

async fn identifiers_refuse_invisible_and_control_characters(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let issue = |subject: &str, audience: &str, client_id: &str| IssueRequest {
        subject: subject.into(),
        audience: audience.into(),
        client_id: client_id.into(),
        ..Default::default()
    };
    let cases = [
        // `admin` followed by an override that prints the rest reversed.
        (issue("user\u{202E}nimda", AUDIENCE, ""), "subject"),
        (issue("user\u{2066}x\u{2069}", AUDIENCE, ""), "subject"),
        (issue("us\u{200B}er", AUDIENCE, ""), "subject"),
        (issue("\u{FEFF}user", AUDIENCE, ""), "subject"),
        (
            issue("user\u{2028}forged log line", AUDIENCE, ""),
            "subject",
        ),
        (issue("user\u{1b}[2J", AUDIENCE, ""), "subject"),
        (issue("user", "orders\u{200D}-api", ""), "audience"),
        (issue("user", "orders-api\u{202A}", ""), "audience"),
        (issue("user", AUDIENCE, "client\u{2060}"), "client_id"),
        (issue("user", AUDIENCE, "client\u{0}"), "client_id"),
    ];
    for (req, field) in cases {
        let s = app.issuer.issue(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        let d = s.get_error_details();
        assert_eq!(d.bad_request().unwrap().field_violations[0].field, field);
        assert_eq!(d.error_info().unwrap().reason, "ERROR_REASON_FIELD_INVALID");
    }
    // Scopes are printable ASCII only, so no format character either.
    let mut r = issue("user", AUDIENCE, "");
    r.scopes = vec!["orders:read\u{200B}".into()];
    let s = app.issuer.issue(r).await.unwrap_err();
    assert_eq!(
        s.get_error_details()
            .bad_request()
            .unwrap()
            .field_violations[0]
            .field,
        "scopes"
    );
    // The same check guards the identifiers Revoke takes.
    let s = app
        .revocation
        .revoke(RevokeRequest {
            target: Some(Target::Subject("user\u{202E}".into())),
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::InvalidArgument);
    // Visible text of any script is still an identifier.
    app.issuer
        .issue(issue("Zoë-用户", AUDIENCE, "client-1"))
        .await
        .unwrap();
    app.stop().await;
    d.cleanup().await;
}

async fn reserved_extra_claims_refuse_to_start(backend: Backend) {
    let d = Deployment::new(backend).await;
    for name in [
        "sub",
        "iss",
        "exp",
        "jti",
        "sid",
        "ver",
        "typ",
        "kid",
        "Scope",
        "client_id",
    ] {
        let mut cfg = d.config();
        cfg.policy.extra_claims_allowlist = vec!["tenant".into(), name.into()];
        let Err(e) = tessera::Application::build(cfg).await else {
            panic!("started with --extra-claims {name}");
        };
        let msg = e.to_string();
        assert!(msg.contains("extra_claims"), "{name}: {msg}");
        assert!(msg.contains(&format!("`{name}`")), "{name}: {msg}");
    }
    // An allowed name starts.
    let app = d.start().await;
    app.stop().await;
    d.cleanup().await;
}
