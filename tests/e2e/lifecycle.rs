//! Refresh families: rotation under concurrency, the idempotent grace
//! window, reuse detection, races with Revoke, expiry, subject and family
//! revocation, and housekeeping. On SQLite and on Postgres + Redis.

use crate::harness::{Backend, Deployment, TestApp, on_both_backends, reason, spawn_app};
use std::collections::HashSet;
use tessera_domain::store::Housekeeping;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{JtiTarget, VerifyFailure};
use tonic::Code;

on_both_backends!(
    concurrent_refreshes_land_on_one_successor,
    the_grace_window_replays_only_the_immediate_predecessor,
    a_zero_grace_window_makes_every_replay_a_reuse,
    refresh_racing_revoke_never_leaves_a_live_token,
    families_end_when_idle_and_at_their_absolute_lifetime,
    revoking_a_subject_ends_every_session_and_older_token,
    revoking_a_family_logs_out_one_session,
    housekeeping_purges_what_expired_and_keeps_what_is_in_force,
    a_family_behind_its_subject_version_is_revoked,
);

#[track_caller]
fn assert_reason(r: Result<impl std::fmt::Debug, tonic::Status>, code: Code, want: &str) {
    let s = r.expect_err("an error status");
    assert_eq!(s.code(), code, "{s:?}");
    assert_eq!(reason(&s), want, "{s:?}");
}

async fn concurrent_refreshes_land_on_one_successor(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let issued = app.issue("tabs").await;
    const CALLS: usize = 100;
    let mut calls = Vec::new();
    for _ in 0..CALLS {
        let mut client = app.issuer.clone();
        let token = issued.refresh_token.clone();
        calls.push(tokio::spawn(async move {
            client
                .refresh(tessera_proto::v1::RefreshRequest {
                    refresh_token: token,
                    scopes: vec![],
                })
                .await
                .map(tonic::Response::into_inner)
        }));
    }
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for c in calls {
        match c.await.unwrap() {
            Ok(r) => ok.push(r),
            Err(s) => failed.push(s),
        }
    }
    let successors: HashSet<_> = ok.iter().map(|r| r.refresh_token.clone()).collect();
    let rows = d
        .count(
            "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = $1",
            &issued.family_id,
        )
        .await;
    println!(
        "{backend:?}: {CALLS} concurrent Refresh calls with one token: {} succeeded, {} failed, {} distinct successor(s), {rows} refresh-token rows in the family",
        ok.len(),
        failed.len(),
        successors.len()
    );
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(successors.len(), 1, "no fork: one successor for everyone");
    assert_eq!(
        rows, 2,
        "the family holds the first token and one successor"
    );
    for r in &ok {
        assert_eq!(app.verify(&r.access_token).await, Ok(()));
        assert_eq!(r.family_id, issued.family_id);
    }
    // The chain goes on from the one successor.
    let next = app.refresh(&ok[0].refresh_token).await.unwrap();
    assert_ne!(next.refresh_token, ok[0].refresh_token);
    app.stop().await;
    d.cleanup().await;
}

async fn the_grace_window_replays_only_the_immediate_predecessor(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let bystander = app.issue("reuser").await;
    let t0 = app.issue("reuser").await;
    let s1 = app.refresh(&t0.refresh_token).await.unwrap();
    // A retry 30 s later (the default window) lands on the same chain.
    d.clock.advance(30);
    let again = app.refresh(&t0.refresh_token).await.unwrap();
    assert_eq!(again.refresh_token, s1.refresh_token);
    assert_eq!(app.verify(&again.access_token).await, Ok(()));
    // One second later the same presentation is reuse: the family dies.
    d.clock.advance(1);
    assert_reason(
        app.refresh(&t0.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_REFRESH_TOKEN_REUSED",
    );
    for t in [&t0.access_token, &s1.access_token, &again.access_token] {
        assert_eq!(app.verify(t).await, Err(VerifyFailure::Revoked));
        assert_eq!(app.verify_strong(t).await, Err(VerifyFailure::Revoked));
    }
    assert_reason(
        app.refresh(&s1.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_REFRESH_TOKEN_INVALID",
    );
    assert_eq!(
        app.verify(&bystander.access_token).await,
        Ok(()),
        "other sessions live"
    );

    // Inside the window, a token older than the immediate predecessor is reuse.
    let t0 = app.issue("reuser2").await;
    let s1 = app.refresh(&t0.refresh_token).await.unwrap();
    let s2 = app.refresh(&s1.refresh_token).await.unwrap();
    assert_reason(
        app.refresh(&t0.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_REFRESH_TOKEN_REUSED",
    );
    assert_eq!(
        app.verify(&s2.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert_reason(
        app.refresh(&s2.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_REFRESH_TOKEN_INVALID",
    );
    // A token that was never issued, and one of the wrong shape.
    for bogus in ["A".repeat(43), "short".to_owned()] {
        assert_reason(
            app.refresh(&bogus).await,
            Code::Unauthenticated,
            "ERROR_REASON_REFRESH_TOKEN_INVALID",
        );
    }
    app.stop().await;
    d.cleanup().await;
}

async fn a_zero_grace_window_makes_every_replay_a_reuse(backend: Backend) {
    let mut d = Deployment::new(backend).await;
    d.families.grace = 0;
    let mut app = d.start().await;
    let t0 = app.issue("strict").await;
    let s1 = app.refresh(&t0.refresh_token).await.unwrap();
    assert_reason(
        app.refresh(&t0.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_REFRESH_TOKEN_REUSED",
    );
    assert_eq!(
        app.verify(&s1.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    app.stop().await;
    d.cleanup().await;
}

async fn refresh_racing_revoke_never_leaves_a_live_token(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    const ROUNDS: usize = 100;
    let (mut refresh_first, mut revoke_first) = (0, 0);
    for _ in 0..ROUNDS {
        let issued = app.issue("racer").await;
        let mut refresher = app.issuer.clone();
        let mut revoker = app.revocation.clone();
        let token = issued.refresh_token.clone();
        let family = issued.family_id.clone();
        let (refreshed, revoked) = tokio::join!(
            tokio::spawn(async move {
                refresher
                    .refresh(tessera_proto::v1::RefreshRequest {
                        refresh_token: token,
                        scopes: vec![],
                    })
                    .await
            }),
            tokio::spawn(async move {
                revoker
                    .revoke(tessera_proto::v1::RevokeRequest {
                        target: Some(Target::FamilyId(family)),
                        reason: String::new(),
                    })
                    .await
            }),
        );
        assert_eq!(revoked.unwrap().unwrap().into_inner().revoked, 1);
        // Revoke has returned: nothing of the family may be alive.
        assert_eq!(
            app.verify(&issued.access_token).await,
            Err(VerifyFailure::Revoked)
        );
        match refreshed.unwrap() {
            Ok(r) => {
                refresh_first += 1;
                let r = r.into_inner();
                assert_eq!(
                    app.verify(&r.access_token).await,
                    Err(VerifyFailure::Revoked)
                );
                assert_eq!(
                    app.verify_strong(&r.access_token).await,
                    Err(VerifyFailure::Revoked)
                );
                assert_reason(
                    app.refresh(&r.refresh_token).await,
                    Code::Unauthenticated,
                    "ERROR_REASON_REFRESH_TOKEN_INVALID",
                );
            }
            Err(s) => {
                revoke_first += 1;
                assert_eq!(reason(&s), "ERROR_REASON_REFRESH_TOKEN_INVALID");
            }
        }
    }
    println!(
        "{backend:?}: {ROUNDS} rounds of Refresh racing Revoke(family): refresh won {refresh_first}, revoke won {revoke_first}, live tokens after Revoke: 0"
    );
    app.stop().await;
    d.cleanup().await;
}

async fn families_end_when_idle_and_at_their_absolute_lifetime(backend: Backend) {
    let mut d = Deployment::new(backend).await;
    d.families.idle_timeout = 3600;
    d.families.absolute_lifetime = 7200;
    let mut app = d.start().await;
    let start = d.clock_now();
    let t0 = app.issue("sleepy").await;
    assert_eq!(t0.refresh_token_expires_at.unwrap().seconds, start + 3600);
    d.clock.advance(3599);
    let s1 = app.refresh(&t0.refresh_token).await.unwrap();
    // Each use moves the idle deadline...
    assert_eq!(
        s1.refresh_token_expires_at.unwrap().seconds,
        d.clock_now() + 3600
    );
    d.clock.advance(3599);
    let s2 = app.refresh(&s1.refresh_token).await.unwrap();
    // ...but never past the absolute end.
    assert_eq!(s2.refresh_token_expires_at.unwrap().seconds, start + 7200);
    d.clock.advance(2); // exactly the absolute end
    assert_reason(
        app.refresh(&s2.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_FAMILY_LIFETIME_EXPIRED",
    );

    let t = app.issue("sleepy").await;
    d.clock.advance(3599);
    let s = app.refresh(&t.refresh_token).await.unwrap();
    d.clock.advance(3600); // exactly the idle deadline
    assert_reason(
        app.refresh(&s.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_FAMILY_IDLE_EXPIRED",
    );
    app.stop().await;
    d.cleanup().await;
}

async fn revoking_a_subject_ends_every_session_and_older_token(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let a = app.issue("carol").await;
    let b = app.issue("carol").await;
    let other = app.issue("dave").await;
    assert_eq!(app.revoke(Target::Subject("carol".into())).await, 2);
    for t in [&a, &b] {
        assert_eq!(
            app.verify(&t.access_token).await,
            Err(VerifyFailure::Revoked)
        );
        assert_eq!(
            app.verify_strong(&t.access_token).await,
            Err(VerifyFailure::Revoked)
        );
        assert_reason(
            app.refresh(&t.refresh_token).await,
            Code::Unauthenticated,
            "ERROR_REASON_REFRESH_TOKEN_INVALID",
        );
    }
    assert_eq!(app.verify(&other.access_token).await, Ok(()));
    // A new login carries the new version and is valid.
    let c = app.issue("carol").await;
    let claims = app
        .verify_with(&c.access_token, tessera_proto::v1::Consistency::Default)
        .await
        .claims
        .unwrap();
    assert_eq!(claims.subject_version, 1);
    assert_eq!(app.verify_strong(&c.access_token).await, Ok(()));
    let r = app.refresh(&c.refresh_token).await.unwrap();
    assert_eq!(app.verify(&r.access_token).await, Ok(()));
    app.stop().await;
    d.cleanup().await;
}

async fn revoking_a_family_logs_out_one_session(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let phone = app.issue("erin").await;
    let laptop = app.issue("erin").await;
    let s = app.refresh(&phone.refresh_token).await.unwrap();
    assert_eq!(
        app.revoke(Target::FamilyId(phone.family_id.clone())).await,
        1
    );
    assert_eq!(
        app.revoke(Target::FamilyId(phone.family_id.clone())).await,
        0,
        "idempotent"
    );
    assert_eq!(
        app.revoke(Target::FamilyId("no-such-family".into())).await,
        0
    );
    assert_eq!(
        app.verify(&s.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    assert_reason(
        app.refresh(&s.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_REFRESH_TOKEN_INVALID",
    );
    assert_eq!(app.verify(&laptop.access_token).await, Ok(()));
    assert!(app.refresh(&laptop.refresh_token).await.is_ok());
    app.stop().await;
    d.cleanup().await;
}

async fn housekeeping_purges_what_expired_and_keeps_what_is_in_force(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let old = app.issue("frank").await;
    app.refresh(&old.refresh_token).await.unwrap();
    app.revoke(Target::Token(old.access_token.clone())).await;
    let revoked_family = app.issue("frank").await;
    app.revoke(Target::FamilyId(revoked_family.family_id.clone()))
        .await;
    app.stop().await;

    // 31 days later everything above has expired; a fresh revocation has not.
    d.clock.advance(31 * 24 * 3600);
    let mut app = d.start().await;
    let fresh = app.issue("frank").await;
    let just_revoked = app.issue("frank").await;
    app.revoke(Target::FamilyId(just_revoked.family_id.clone()))
        .await;
    app.revoke(Target::Jti(JtiTarget {
        jti: fresh.access_token_id.clone(),
        expires_at: fresh.access_token_expires_at,
    }))
    .await;
    app.stop().await;

    let store = tessera_storage::SqlStore::connect(&d.store_url())
        .await
        .unwrap();
    let now = d.clock_now();
    let margin = 3600 + 30;
    // Batches of 1: purge is bounded and converges when called again.
    let mut rounds = 0;
    while store.purge(now, margin, 1).await.unwrap() > 0 {
        rounds += 1;
        assert!(rounds < 100);
    }
    store.close().await;
    assert!(rounds >= 2, "bounded batches took {rounds} rounds");
    let count = |sql| d.count(sql, "frank");
    assert_eq!(
        count("SELECT COUNT(*) FROM families WHERE subject = $1").await,
        2,
        "the live family and the just-revoked one are left"
    );
    assert_eq!(
        d.count(
            "SELECT COUNT(*) FROM refresh_tokens WHERE family_id = $1",
            &old.family_id
        )
        .await,
        0
    );
    assert_eq!(
        d.count(
            "SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1",
            &old.access_token_id
        )
        .await,
        0
    );
    assert_eq!(
        d.count(
            "SELECT COUNT(*) FROM revoked_tokens WHERE jti = $1",
            &fresh.access_token_id
        )
        .await,
        1,
        "a revocation in force is kept"
    );
    let mut app: TestApp = d.start().await;
    assert_eq!(
        app.verify(&fresh.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    app.stop().await;
    d.cleanup().await;
}

async fn a_family_behind_its_subject_version_is_revoked(backend: Backend) {
    // The state a login racing Revoke(subject) can leave: the family row was
    // written after the revocation's UPDATE, so it is not marked revoked,
    // but the subject's version has moved past the family's.
    let (d, mut app) = spawn_app(backend).await;
    let login = app.issue("paula").await;
    d.execute(
        "INSERT INTO subjects (subject, version) VALUES ($1, 1)",
        "paula",
    )
    .await;
    assert_reason(
        app.refresh(&login.refresh_token).await,
        Code::Unauthenticated,
        "ERROR_REASON_REFRESH_TOKEN_INVALID",
    );
    assert_eq!(
        app.verify_strong(&login.access_token).await,
        Err(VerifyFailure::Revoked)
    );
    app.stop().await;
    d.cleanup().await;
}
