//! The extra claims given at `Issue` belong to the session: they are stored
//! with the refresh-token family and carried into every access token
//! `Refresh` mints. A family stored before they were kept (its
//! column NULL, as the migration leaves every older row) refreshes with none.
//! On SQLite and on Postgres + Redis.

use crate::harness::{AUDIENCE, Backend, TestApp, on_both_backends, spawn_app};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use tessera_proto::v1::{Consistency, IssueRequest};

on_both_backends!(
    refreshed_tokens_carry_the_sessions_extra_claims,
    a_family_stored_without_extra_claims_refreshes_with_none,
);

fn text(s: &str) -> Value {
    Value::from(s.to_owned())
}

/// `tenant` (the harness's one allowlisted name) as a nested object, so the
/// stored JSON must keep its structure, not only a string.
fn tenant() -> Value {
    Value {
        kind: Some(Kind::StructValue(Struct {
            fields: [
                ("id".to_owned(), text("acme")),
                (
                    "regions".to_owned(),
                    Value {
                        kind: Some(Kind::ListValue(ListValue {
                            values: vec![text("eu"), text("us")],
                        })),
                    },
                ),
            ]
            .into(),
        })),
    }
}

async fn issue_with_tenant(app: &TestApp, subject: &str) -> tessera_proto::v1::IssueResponse {
    app.issuer
        .clone()
        .issue(IssueRequest {
            subject: subject.into(),
            audience: AUDIENCE.into(),
            scopes: vec!["orders:read".into()],
            extra_claims: Some(Struct {
                fields: [("tenant".to_owned(), tenant())].into(),
            }),
            ..Default::default()
        })
        .await
        .expect("Issue")
        .into_inner()
}

/// Every claim of a valid token, as Verify decodes it.
async fn all_claims(app: &mut TestApp, token: &str) -> Struct {
    let r = app.verify_with(token, Consistency::Default).await;
    assert!(r.valid, "{:?}", r.failure());
    r.claims.unwrap().all_claims.unwrap()
}

async fn refreshed_tokens_carry_the_sessions_extra_claims(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let issued = issue_with_tenant(&app, "claims-user").await;
    assert_eq!(
        all_claims(&mut app, &issued.access_token).await.fields["tenant"],
        tenant()
    );
    // Stored with the family, as JSON text.
    assert_eq!(
        d.count(
            "SELECT COUNT(*) FROM families WHERE family_id = $1 AND extra_claims LIKE '%\"acme\"%'",
            &issued.family_id,
        )
        .await,
        1
    );
    let first = app.refresh(&issued.refresh_token).await.unwrap();
    let second = app.refresh(&first.refresh_token).await.unwrap();
    for token in [&first.access_token, &second.access_token] {
        let claims = all_claims(&mut app, token).await;
        assert_eq!(claims.fields["tenant"], tenant(), "carried on refresh");
        assert_eq!(claims.fields["sid"], text(&issued.family_id));
    }
    // Another session of the same subject, opened without extra claims,
    // borrows nothing from the first.
    let plain = app.issue("claims-user").await;
    let next = app.refresh(&plain.refresh_token).await.unwrap();
    let claims = all_claims(&mut app, &next.access_token).await;
    assert!(!claims.fields.contains_key("tenant"), "{claims:?}");
    app.stop().await;
    d.cleanup().await;
}

async fn a_family_stored_without_extra_claims_refreshes_with_none(backend: Backend) {
    let (d, mut app) = spawn_app(backend).await;
    let issued = issue_with_tenant(&app, "legacy-user").await;
    // What `0003_family_extra_claims` leaves in every family stored before
    // it: the new column NULL.
    d.execute(
        "UPDATE families SET extra_claims = NULL WHERE family_id = $1",
        &issued.family_id,
    )
    .await;
    let next = app.refresh(&issued.refresh_token).await.unwrap();
    let claims = all_claims(&mut app, &next.access_token).await;
    assert!(!claims.fields.contains_key("tenant"), "{claims:?}");
    assert_eq!(claims.fields["sub"], text("legacy-user"));
    // And it keeps rotating.
    app.refresh(&next.refresh_token).await.unwrap();
    app.stop().await;
    d.cleanup().await;
}
