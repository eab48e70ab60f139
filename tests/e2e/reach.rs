//! Rights that reach only as far as they are granted: a purpose token is
//! redeemed only by the caller it was issued to, and ending a subject's
//! sessions through a password reset needs the `subject` revocation right,
//! both refused before the token is consumed; `Issue` names only the caller's
//! own client ids and grants only the scopes its patterns allow.

use crate::harness::as_caller;
use crate::harness::service_key as key;
use crate::harness::{Backend, Deployment, on_both_backends, start_config};
use tessera_proto::v1::{
    IssuePurposeTokenRequest, IssueRequest, RedeemPurposeTokenRequest, TokenKind,
};
use tonic::Code;

async fn a_reset_ends_sessions_only_with_the_subject_right(backend: Backend) {
    let d = Deployment::new(backend).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let ((resets, resets_h), (support, support_h)) = (key(), key());
    let file = d.data_dir.join("callers.toml");
    std::fs::write(
        &file,
        format!(
            "[[caller]]\nid = \"resets\"\nkey_sha256 = [\"{resets_h}\"]\n\
             rpcs = [\"IssuePurposeToken\", \"RedeemPurposeToken\"]\n\n\
             [[caller]]\nid = \"support\"\nkey_sha256 = [\"{support_h}\"]\n\
             rpcs = [\"RedeemPurposeToken\"]\nrevoke = [\"subject\"]\n"
        ),
    )
    .unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    let (app, stop, handle) = start_config(cfg).await;
    let issue = IssuePurposeTokenRequest {
        subject: "pat".into(),
        kind: TokenKind::PasswordReset.into(),
        binding: String::new(),
        ttl: None,
    };
    let token = app
        .issuer
        .clone()
        .issue_purpose_token(as_caller(issue, &resets))
        .await
        .unwrap()
        .into_inner()
        .token;
    let redeem = |revoke: bool| RedeemPurposeTokenRequest {
        token: token.clone(),
        kind: TokenKind::PasswordReset.into(),
        binding: String::new(),
        revoke_subject_sessions: revoke,
    };
    let refused = app
        .issuer
        .clone()
        .redeem_purpose_token(as_caller(redeem(true), &resets))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert_eq!(
        crate::harness::reason(&refused),
        "ERROR_REASON_CALLER_NOT_ALLOWED"
    );
    assert!(refused.message().contains("subject"), "{refused:?}");
    // A token issued to another caller: refused, nothing consumed.
    let other = app
        .issuer
        .clone()
        .redeem_purpose_token(as_caller(redeem(false), &support))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert_eq!(
        crate::harness::reason(&other),
        "ERROR_REASON_TOKEN_OWNER_MISMATCH"
    );
    // Nothing was consumed by either refusal: its owner redeems it.
    let r = app
        .issuer
        .clone()
        .redeem_purpose_token(as_caller(redeem(false), &resets))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.subject, "pat");

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

async fn issue_names_only_its_clients_and_scopes(backend: Backend) {
    let d = Deployment::new(backend).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let (k, h) = key();
    let file = d.data_dir.join("callers.toml");
    std::fs::write(
        &file,
        format!(
            "[[caller]]\nid = \"app-a\"\nkey_sha256 = [\"{h}\"]\nrpcs = [\"Issue\"]\n\
             audiences = [\"{}\"]\nscopes = [\"orders:*\", \"profile\"]\nclient_ids = [\"app-a-web\"]\n",
            crate::harness::AUDIENCE
        ),
    )
    .unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    let (app, stop, handle) = start_config(cfg).await;
    let issue = |scopes: &[&str], client_id: &str| IssueRequest {
        subject: "ana".into(),
        audience: crate::harness::AUDIENCE.into(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        client_id: client_id.into(),
        ..Default::default()
    };
    for (scopes, client) in [
        (&["orders:read", "profile"][..], ""),
        (&["orders:write"][..], "app-a"),
        (&[][..], "app-a-web"),
    ] {
        let r = app
            .issuer
            .clone()
            .issue(as_caller(issue(scopes, client), &k))
            .await;
        assert!(r.is_ok(), "{scopes:?} {client:?}: {r:?}");
    }
    for (scopes, client, what) in [
        (&["admin:*"][..], "", "scope"),
        (&["orders"][..], "", "scope"),
        (&["profile:x"][..], "", "scope"),
        (&[][..], "app-b", "client_id"),
    ] {
        let s = app
            .issuer
            .clone()
            .issue(as_caller(issue(scopes, client), &k))
            .await
            .unwrap_err();
        assert_eq!(
            s.code(),
            Code::PermissionDenied,
            "{scopes:?} {client:?}: {s:?}"
        );
        assert!(s.message().contains(what), "{s:?}");
    }

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

/// A refresh token belongs to the caller that obtained it: another
/// caller's Refresh is refused with a reason of its own, nothing consumed
/// and no reuse (the owner refreshes it after); the audience right is
/// checked again at every Refresh.
async fn a_refresh_token_is_its_callers(backend: Backend) {
    use tessera_proto::v1::RefreshRequest;
    let d = Deployment::new(backend).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let ((a, a_h), (b, b_h)) = (key(), key());
    let aud = crate::harness::AUDIENCE;
    let entry = |id: &str, h: &str, audiences: &str| {
        format!(
            "[[caller]]\nid = \"{id}\"\nkey_sha256 = [\"{h}\"]\nrpcs = [\"Issue\", \"Refresh\"]\naudiences = [{audiences}]\n\n"
        )
    };
    let file = d.data_dir.join("callers.toml");
    let both = format!("\"{aud}\"");
    std::fs::write(
        &file,
        entry("app-a", &a_h, &both) + &entry("app-b", &b_h, &both),
    )
    .unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file.clone());
    let (app, stop, handle) = start_config(cfg).await;
    let login = IssueRequest {
        subject: "ana".into(),
        audience: aud.into(),
        ..Default::default()
    };
    let issued = app
        .issuer
        .clone()
        .issue(as_caller(login, &a))
        .await
        .unwrap()
        .into_inner();
    let refresh = |t: &str| RefreshRequest {
        refresh_token: t.into(),
        scopes: vec![],
    };
    let s = app
        .issuer
        .clone()
        .refresh(as_caller(refresh(&issued.refresh_token), &b))
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert_eq!(
        crate::harness::reason(&s),
        "ERROR_REASON_TOKEN_OWNER_MISMATCH"
    );
    // Nothing was consumed and it was no reuse: the owner goes on.
    let next = app
        .issuer
        .clone()
        .refresh(as_caller(refresh(&issued.refresh_token), &a))
        .await
        .expect("the owner refreshes its token")
        .into_inner();
    assert_eq!(next.family_id, issued.family_id);

    // app-a loses the audience: its next Refresh is refused for it.
    let tmp = file.with_extension("new");
    std::fs::write(
        &tmp,
        entry("app-a", &a_h, "\"billing\"") + &entry("app-b", &b_h, &both),
    )
    .unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    crate::harness::eventually("the reload withdraws the audience", || {
        let mut i = app.issuer.clone();
        let r = as_caller(refresh(&next.refresh_token), &a);
        async move {
            i.refresh(r).await.is_err_and(|s| {
                s.code() == Code::PermissionDenied
                    && crate::harness::reason(&s) == "ERROR_REASON_CALLER_NOT_ALLOWED"
            })
        }
    })
    .await;

    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}

on_both_backends!(
    a_reset_ends_sessions_only_with_the_subject_right,
    issue_names_only_its_clients_and_scopes,
    a_refresh_token_is_its_callers
);
