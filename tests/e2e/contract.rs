//! The proto contract against the server. Reflection shows every RPC's
//! comment to every user, and the contract promises each RPC works: each
//! `rpc` of `proto/tessera/v1` is called with a minimal valid request and
//! must answer OK, with a real answer (tokens that verify, keys, a stream's
//! first message), so an RPC left unimplemented, or answering something
//! other than its comment says, fails the test. A comment anywhere in the
//! protos calling something UNIMPLEMENTED fails it too: every RPC answers,
//! and no field or oneof case may claim otherwise. `Revoke{kid}`, once such
//! a case, is called as well.

use crate::harness::{AUDIENCE, Backend, Deployment, kid_of, reason};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    CompromiseKeyRequest, Consistency, GetJwksRequest, IssuePurposeTokenRequest, IssueRequest,
    KeyState, ListKeysRequest, RedeemPurposeTokenRequest, RefreshRequest, RetireKeyRequest,
    RevokeRequest, RotateKeysRequest, TokenKind, VerifyRequest, WatchKeysRequest,
    WatchRevocationsRequest,
};

/// Every proto file with a service, read at compile time so that the test
/// always holds the protos of the build it tests.
const PROTOS: [(&str, &str); 6] = [
    (
        "common.proto",
        include_str!("../../proto/tessera/v1/common.proto"),
    ),
    (
        "errors.proto",
        include_str!("../../proto/tessera/v1/errors.proto"),
    ),
    (
        "introspection.proto",
        include_str!("../../proto/tessera/v1/introspection.proto"),
    ),
    (
        "issuer.proto",
        include_str!("../../proto/tessera/v1/issuer.proto"),
    ),
    (
        "keys.proto",
        include_str!("../../proto/tessera/v1/keys.proto"),
    ),
    (
        "revocation.proto",
        include_str!("../../proto/tessera/v1/revocation.proto"),
    ),
];

/// One `rpc` line and the service it belongs to.
#[derive(Debug)]
struct Rpc {
    service: String,
    name: String,
}

fn says_unimplemented(comment: &str) -> bool {
    let c = comment.to_ascii_lowercase();
    c.contains("unimplemented") || c.contains("not implemented")
}

/// The RPCs of one file, and every comment that claims UNIMPLEMENTED (on
/// an `rpc` or anything else), as `file:line`.
fn parse(file: &str, text: &str) -> (Vec<Rpc>, Vec<String>) {
    let (mut rpcs, mut claims) = (Vec::new(), Vec::new());
    let mut service = String::new();
    let mut comment = String::new();
    let mut comment_line = 0;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(c) = line.strip_prefix("//") {
            if comment.is_empty() {
                comment_line = i + 1;
            }
            comment.push_str(c);
            comment.push('\n');
            continue;
        }
        if says_unimplemented(&comment) {
            claims.push(format!("{file}:{comment_line}"));
        }
        comment.clear();
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.trim_end_matches('{').trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            let name = rest.split('(').next().unwrap().trim().to_owned();
            rpcs.push(Rpc {
                service: service.clone(),
                name,
            });
        }
    }
    (rpcs, claims)
}

/// The answer of `rpc` (recorded in `called`) to a valid request: OK, or
/// the test fails naming the code (UNIMPLEMENTED for an RPC with no
/// handler) and reason.
fn answer<T>(
    called: &mut Vec<&'static str>,
    rpc: &'static str,
    r: Result<tonic::Response<T>, tonic::Status>,
) -> T {
    called.push(rpc);
    r.unwrap_or_else(|s| {
        panic!(
            "{rpc} answered a valid request with {:?} ({}): {}",
            s.code(),
            reason(&s),
            s.message()
        )
    })
    .into_inner()
}

/// The next message of a stream (the 20 s bound is a liveness bound).
async fn next<T>(stream: &mut tonic::Streaming<T>, what: &str) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
        .await
        .unwrap_or_else(|_| panic!("{what}: no message"))
        .unwrap_or_else(|s| panic!("{what}: {s:?}"))
        .unwrap_or_else(|| panic!("{what}: the stream ended"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_a_valid_request() {
    let (mut rpcs, mut claims) = (Vec::new(), Vec::new());
    for (file, text) in PROTOS {
        let (r, c) = parse(file, text);
        rpcs.extend(r);
        claims.extend(c);
    }
    assert!(
        claims.is_empty(),
        "comments claim UNIMPLEMENTED, but every RPC must answer: {claims:?}"
    );
    // The parser must see the whole contract, or the test proves nothing.
    let mut services: Vec<&str> = rpcs.iter().map(|r| r.service.as_str()).collect();
    services.dedup();
    assert_eq!(
        services,
        [
            "IntrospectionService",
            "IssuerService",
            "KeyService",
            "RevocationService"
        ]
    );
    assert_eq!(rpcs.len(), 13, "{rpcs:?}");

    let d = Deployment::new(Backend::Embedded).await;
    let schedule = d.keys;
    let mut app = d.start().await;
    let mut called = Vec::new();
    let c = &mut called;

    // The key set, three ways: one active key.
    let jwks = answer(
        c,
        "KeyService/GetJwks",
        app.keys.get_jwks(GetJwksRequest {}).await,
    );
    // The signing key and its standby.
    assert_eq!(jwks.keys.len(), 2, "{jwks:?}");
    let first = jwks
        .keys
        .iter()
        .find(|k| k.state() == KeyState::Active)
        .expect("an active key")
        .kid
        .clone();
    assert!(jwks.jwks_json.contains(&first), "{jwks:?}");
    let listed = answer(
        c,
        "KeyService/ListKeys",
        app.keys.list_keys(ListKeysRequest {}).await,
    );
    let states: Vec<_> = listed
        .keys
        .iter()
        .map(|k| (k.kid.clone(), k.state()))
        .collect();
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states.contains(&(first.clone(), KeyState::Active)),
        "{states:?}"
    );
    assert!(
        states.iter().any(|(_, s)| *s == KeyState::Pending),
        "{states:?}"
    );
    let mut key_sets = answer(
        c,
        "KeyService/WatchKeys",
        app.keys.watch_keys(WatchKeysRequest {}).await,
    );
    let set = next(&mut key_sets, "WatchKeys").await;
    assert_eq!(set.keys.len(), 2, "the current set comes first: {set:?}");
    assert!(set.keys.iter().any(|k| k.kid == first), "{set:?}");
    assert_eq!(set.etag, jwks.etag);
    // Revocations from now on: the one below comes through.
    let mut revocations = answer(
        c,
        "RevocationService/WatchRevocations",
        app.revocation
            .watch_revocations(WatchRevocationsRequest::default())
            .await,
    );

    // A login, verified and refreshed; a purpose token issued and redeemed.
    let issued = answer(
        c,
        "IssuerService/Issue",
        app.issuer
            .issue(IssueRequest {
                subject: "contract".into(),
                audience: AUDIENCE.into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(kid_of(&issued.access_token), first);
    assert!(!issued.refresh_token.is_empty() && !issued.family_id.is_empty());
    let verdict = answer(
        c,
        "IntrospectionService/Verify",
        app.introspection
            .verify(VerifyRequest {
                token: issued.access_token.clone(),
                expected_audience: AUDIENCE.into(),
                expected_kind: TokenKind::Access.into(),
                consistency: Consistency::Default.into(),
            })
            .await,
    );
    assert!(verdict.valid, "{verdict:?}");
    let claims = verdict.claims.unwrap();
    assert_eq!(
        (claims.subject.as_str(), claims.token_id.as_str()),
        ("contract", issued.access_token_id.as_str())
    );
    let refreshed = answer(
        c,
        "IssuerService/Refresh",
        app.issuer
            .refresh(RefreshRequest {
                refresh_token: issued.refresh_token.clone(),
                scopes: vec![],
            })
            .await,
    );
    assert_eq!(refreshed.family_id, issued.family_id);
    assert_ne!(refreshed.refresh_token, issued.refresh_token);
    let purpose = answer(
        c,
        "IssuerService/IssuePurposeToken",
        app.issuer
            .issue_purpose_token(IssuePurposeTokenRequest {
                subject: "contract".into(),
                kind: TokenKind::EmailVerification.into(),
                binding: "contract@example.test".into(),
                ttl: None,
            })
            .await,
    );
    let redeemed = answer(
        c,
        "IssuerService/RedeemPurposeToken",
        app.issuer
            .redeem_purpose_token(RedeemPurposeTokenRequest {
                token: purpose.token,
                kind: TokenKind::EmailVerification.into(),
                binding: "contract@example.test".into(),
                revoke_subject_sessions: false,
            })
            .await,
    );
    assert_eq!(redeemed.subject, "contract");

    // The access token revoked, and the revocation streamed.
    let revoked = answer(
        c,
        "RevocationService/Revoke",
        app.revocation
            .revoke(RevokeRequest {
                target: Some(Target::Token(issued.access_token.clone())),
                reason: "contract".into(),
            })
            .await,
    );
    assert_eq!(
        (revoked.revoked, revoked.jti.as_str()),
        (1, issued.access_token_id.as_str())
    );
    let event = next(&mut revocations, "WatchRevocations").await;
    assert_eq!(event.jti, issued.access_token_id);

    // A rotation; the first key retired once its tokens are gone; the
    // second killed, a third signing in its place.
    let rotated = answer(
        c,
        "KeyService/RotateKeys",
        app.keys.rotate_keys(RotateKeysRequest::default()).await,
    );
    assert_eq!(rotated.changed.len(), 1, "{rotated:?}");
    assert_eq!(rotated.changed[0].state(), KeyState::Pending);
    let second = rotated.changed[0].kid.clone();
    d.clock.advance(schedule.publish_ahead);
    app.tick().await;
    d.clock.advance(schedule.retire_after);
    let retired = answer(
        c,
        "KeyService/RetireKey",
        app.keys
            .retire_key(RetireKeyRequest { kid: first.clone() })
            .await,
    )
    .key
    .unwrap();
    assert_eq!((retired.state(), retired.kid), (KeyState::Retired, first));
    let killed = answer(
        c,
        "KeyService/CompromiseKey",
        app.keys
            .compromise_key(CompromiseKeyRequest {
                kid: second.clone(),
                reason: "contract".into(),
            })
            .await,
    );
    let key = killed.key.unwrap();
    assert_eq!((key.state(), key.kid), (KeyState::Compromised, second));
    let third = killed.new_active_key.expect("a successor signs").kid;

    // Revoke{kid}: the oneof case that once said UNIMPLEMENTED kills the
    // key that signs now.
    app.revocation
        .revoke(RevokeRequest {
            target: Some(Target::Kid(third.clone())),
            reason: "contract".into(),
        })
        .await
        .unwrap_or_else(|s| panic!("Revoke{{kid}}: {s:?}"));
    let listed = app.keys.list_keys(ListKeysRequest {}).await.unwrap();
    let state = listed
        .into_inner()
        .keys
        .into_iter()
        .find(|k| k.kid == third);
    assert_eq!(state.map(|k| k.state()), Some(KeyState::Compromised));

    // Every RPC of the protos was called, and nothing else.
    let mut contract: Vec<String> = rpcs
        .iter()
        .map(|r| format!("{}/{}", r.service, r.name))
        .collect();
    contract.sort();
    called.sort_unstable();
    assert_eq!(called, contract, "add a valid call for each new RPC");

    app.stop().await;
    d.cleanup().await;
}
