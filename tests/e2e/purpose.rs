//! Purpose tokens: single use, their own lifetimes, never confused with
//! access tokens, and a password reset that can end every session.

use crate::harness::{AUDIENCE, Backend, on_both_backends, reason, spawn_app};
use tessera_proto::v1::{
    Consistency, IssuePurposeTokenRequest, RedeemPurposeTokenRequest, TokenKind, VerifyFailure,
    VerifyRequest,
};
use tonic::Code;

on_both_backends!(
    a_purpose_token_is_redeemed_exactly_once,
    purpose_token_lifetimes_end_on_the_second,
    purpose_and_access_tokens_never_cross,
    a_password_reset_can_end_every_session,
    a_revoked_purpose_token_does_not_redeem,
);

fn issue_req(subject: &str, kind: TokenKind, binding: &str) -> IssuePurposeTokenRequest {
    IssuePurposeTokenRequest {
        subject: subject.into(),
        kind: kind.into(),
        binding: binding.into(),
        ttl: None,
    }
}

fn redeem_req(token: &str, kind: TokenKind, binding: &str) -> RedeemPurposeTokenRequest {
    RedeemPurposeTokenRequest {
        token: token.into(),
        kind: kind.into(),
        binding: binding.into(),
        revoke_subject_sessions: false,
    }
}

async fn a_purpose_token_is_redeemed_exactly_once(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let t = app
        .issuer
        .issue_purpose_token(issue_req(
            "gina",
            TokenKind::EmailVerification,
            "gina@example.com",
        ))
        .await
        .unwrap()
        .into_inner()
        .token;
    let wrong = app
        .issuer
        .redeem_purpose_token(redeem_req(
            &t,
            TokenKind::EmailVerification,
            "eve@example.com",
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    assert_eq!(reason(&wrong), "ERROR_REASON_PURPOSE_TOKEN_INVALID");

    let mut calls = Vec::new();
    for _ in 0..20 {
        let mut c = app.issuer.clone();
        let req = redeem_req(&t, TokenKind::EmailVerification, "gina@example.com");
        calls.push(tokio::spawn(
            async move { c.redeem_purpose_token(req).await },
        ));
    }
    let (mut ok, mut used) = (0, 0);
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => {
                assert_eq!(r.into_inner().subject, "gina");
                ok += 1;
            }
            Err(s) => {
                assert_eq!(s.code(), Code::FailedPrecondition);
                assert_eq!(reason(&s), "ERROR_REASON_PURPOSE_TOKEN_ALREADY_USED");
                used += 1;
            }
        }
    }
    assert_eq!((ok, used), (1, 19));
    app.stop().await;
    d.cleanup().await;
}

async fn purpose_token_lifetimes_end_on_the_second(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let skew = 30;
    for (kind, ttl) in [
        (TokenKind::EmailVerification, 24 * 3600),
        (TokenKind::PasswordReset, 3600),
    ] {
        let start = d.clock_now();
        let mut tokens = Vec::new();
        for _ in 0..2 {
            let r = app
                .issuer
                .issue_purpose_token(issue_req("hank", kind, ""))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.expires_at.unwrap().seconds, start + ttl);
            tokens.push(r.token);
        }
        d.clock.advance(ttl + skew - 1);
        assert!(
            app.issuer
                .redeem_purpose_token(redeem_req(&tokens[0], kind, ""))
                .await
                .is_ok()
        );
        d.clock.advance(1);
        let s = app
            .issuer
            .redeem_purpose_token(redeem_req(&tokens[1], kind, ""))
            .await
            .unwrap_err();
        assert_eq!(reason(&s), "ERROR_REASON_PURPOSE_TOKEN_INVALID", "{kind:?}");
        // Longer than the purpose allows is refused.
        let mut req = issue_req("hank", kind, "");
        req.ttl = Some(prost_types::Duration {
            seconds: ttl + 1,
            nanos: 0,
        });
        let s = app.issuer.issue_purpose_token(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument);
    }
    app.stop().await;
    d.cleanup().await;
}

async fn purpose_and_access_tokens_never_cross(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let reset = app
        .issuer
        .issue_purpose_token(issue_req("ivy", TokenKind::PasswordReset, ""))
        .await
        .unwrap()
        .into_inner()
        .token;
    // Verify never takes a purpose token as an access token, whatever
    // audience the caller names.
    for audience in [AUDIENCE, "urn:tessera:password-reset"] {
        let r = app
            .introspection
            .verify(VerifyRequest {
                token: reset.clone(),
                expected_audience: audience.into(),
                expected_kind: TokenKind::Access.into(),
                consistency: Consistency::Default.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.valid);
        assert!(matches!(
            r.failure(),
            VerifyFailure::WrongAudience | VerifyFailure::WrongTokenKind
        ));
    }
    // RedeemPurposeToken never takes an access token, nor the other purpose.
    let access = app.issue("ivy").await.access_token;
    for (token, kind) in [
        (&access, TokenKind::PasswordReset),
        (&access, TokenKind::EmailVerification),
        (&reset, TokenKind::EmailVerification),
    ] {
        let s = app
            .issuer
            .redeem_purpose_token(redeem_req(token, kind, ""))
            .await
            .unwrap_err();
        assert_eq!(reason(&s), "ERROR_REASON_PURPOSE_TOKEN_INVALID");
    }
    for bad in [0, 1, 42] {
        let mut req = issue_req("ivy", TokenKind::EmailVerification, "");
        req.kind = bad;
        let s = app.issuer.issue_purpose_token(req).await.unwrap_err();
        assert_eq!(s.code(), Code::InvalidArgument, "kind {bad}");
    }
    // And the reset token is still good for its own purpose.
    assert!(
        app.issuer
            .redeem_purpose_token(redeem_req(&reset, TokenKind::PasswordReset, ""))
            .await
            .is_ok()
    );
    app.stop().await;
    d.cleanup().await;
}

async fn a_password_reset_can_end_every_session(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let a = app.issue("jack").await;
    let b = app.issue("jack").await;
    let reset = app
        .issuer
        .issue_purpose_token(issue_req("jack", TokenKind::PasswordReset, ""))
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut req = redeem_req(&reset, TokenKind::PasswordReset, "");
    req.revoke_subject_sessions = true;
    let r = app
        .issuer
        .redeem_purpose_token(req)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.subject, "jack");
    assert_eq!(r.revoked_families, 2);
    for t in [&a, &b] {
        assert_eq!(
            app.verify(&t.access_token).await,
            Err(VerifyFailure::Revoked)
        );
        assert!(app.refresh(&t.refresh_token).await.is_err());
    }
    app.stop().await;
    d.cleanup().await;
}

async fn a_revoked_purpose_token_does_not_redeem(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let mint = |app: &mut crate::harness::TestApp| {
        let mut issuer = app.issuer.clone();
        async move {
            issuer
                .issue_purpose_token(issue_req("otto", TokenKind::PasswordReset, ""))
                .await
                .unwrap()
                .into_inner()
                .token
        }
    };
    // Revoked by token.
    let t = mint(&mut app).await;
    app.revoke(tessera_proto::v1::revoke_request::Target::Token(t.clone()))
        .await;
    let s = app
        .issuer
        .redeem_purpose_token(redeem_req(&t, TokenKind::PasswordReset, ""))
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "ERROR_REASON_PURPOSE_TOKEN_INVALID");
    // Outstanding tokens of a subject that was revoked (a reset redeemed
    // with revoke_subject_sessions does that) no longer redeem.
    let first = mint(&mut app).await;
    let second = mint(&mut app).await;
    let mut req = redeem_req(&first, TokenKind::PasswordReset, "");
    req.revoke_subject_sessions = true;
    app.issuer.redeem_purpose_token(req).await.unwrap();
    let s = app
        .issuer
        .redeem_purpose_token(redeem_req(&second, TokenKind::PasswordReset, ""))
        .await
        .unwrap_err();
    assert_eq!(reason(&s), "ERROR_REASON_PURPOSE_TOKEN_INVALID");
    app.stop().await;
    d.cleanup().await;
}
