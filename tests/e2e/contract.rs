//! The proto comments against the server. Reflection shows every RPC's
//! comment to every user, so a comment that says an RPC is not implemented
//! must be true, and so must its silence. Each `rpc` of `proto/tessera/v1`
//! is called with a minimal request: one whose comment says UNIMPLEMENTED
//! must answer exactly that (with `ERROR_REASON_NOT_IMPLEMENTED`), every
//! other one must answer anything else. A claim of UNIMPLEMENTED anywhere
//! but on an RPC (a field, a oneof case) has no call to hold it to and fails
//! the test; `Revoke{kid}`, once such a case, is called on its own.

use crate::harness::{Backend, TestApp, reason, spawn_app};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    CompromiseKeyRequest, GetJwksRequest, IssuePurposeTokenRequest, IssueRequest, ListKeysRequest,
    RedeemPurposeTokenRequest, RefreshRequest, RetireKeyRequest, RevokeRequest, RotateKeysRequest,
    VerifyRequest, WatchKeysRequest, WatchRevocationsRequest,
};
use tonic::Code;

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

/// One `rpc` line and the comment block right above it.
#[derive(Debug)]
struct Rpc {
    service: String,
    name: String,
    says_unimplemented: bool,
}

fn says_unimplemented(comment: &str) -> bool {
    let c = comment.to_ascii_lowercase();
    c.contains("unimplemented") || c.contains("not implemented")
}

/// The RPCs of one file. A comment claiming UNIMPLEMENTED that does not sit
/// on an `rpc` line is returned in the second list, as `file:line`.
fn parse(file: &str, text: &str) -> (Vec<Rpc>, Vec<String>) {
    let (mut rpcs, mut stray) = (Vec::new(), Vec::new());
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
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.trim_end_matches('{').trim().to_owned();
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            let name = rest.split('(').next().unwrap().trim().to_owned();
            rpcs.push(Rpc {
                service: service.clone(),
                name,
                says_unimplemented: says_unimplemented(&comment),
            });
            comment.clear();
            continue;
        }
        if says_unimplemented(&comment) {
            stray.push(format!("{file}:{comment_line}"));
        }
        comment.clear();
    }
    (rpcs, stray)
}

/// Drops a response: only whether the call succeeded matters.
fn ok<T>(_: T) {}

/// Calls one RPC with a minimal (default, mostly invalid) request. The
/// answer's code is all that matters: the handler ran, or it did not exist.
async fn call(app: &mut TestApp, service: &str, rpc: &str) -> Result<(), tonic::Status> {
    match (service, rpc) {
        ("IssuerService", "Issue") => app.issuer.issue(IssueRequest::default()).await.map(ok),
        ("IssuerService", "Refresh") => app.issuer.refresh(RefreshRequest::default()).await.map(ok),
        ("IssuerService", "IssuePurposeToken") => app
            .issuer
            .issue_purpose_token(IssuePurposeTokenRequest::default())
            .await
            .map(ok),
        ("IssuerService", "RedeemPurposeToken") => app
            .issuer
            .redeem_purpose_token(RedeemPurposeTokenRequest::default())
            .await
            .map(ok),
        ("IntrospectionService", "Verify") => app
            .introspection
            .verify(VerifyRequest::default())
            .await
            .map(ok),
        ("KeyService", "GetJwks") => app.keys.get_jwks(GetJwksRequest {}).await.map(ok),
        // A stream answers Ok once its headers arrive; UNIMPLEMENTED would
        // come instead of them.
        ("KeyService", "WatchKeys") => app.keys.watch_keys(WatchKeysRequest {}).await.map(ok),
        ("KeyService", "ListKeys") => app.keys.list_keys(ListKeysRequest {}).await.map(ok),
        ("KeyService", "RotateKeys") => app
            .keys
            .rotate_keys(RotateKeysRequest::default())
            .await
            .map(ok),
        ("KeyService", "RetireKey") => app
            .keys
            .retire_key(RetireKeyRequest {
                kid: "no-such-kid".into(),
            })
            .await
            .map(ok),
        ("KeyService", "CompromiseKey") => app
            .keys
            .compromise_key(CompromiseKeyRequest::default())
            .await
            .map(ok),
        ("RevocationService", "Revoke") => app
            .revocation
            .revoke(RevokeRequest::default())
            .await
            .map(ok),
        ("RevocationService", "WatchRevocations") => app
            .revocation
            .watch_revocations(WatchRevocationsRequest::default())
            .await
            .map(ok),
        _ => panic!("{service}/{rpc} is in the protos but not here: add a minimal call for it"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proto_comments_say_which_rpcs_are_implemented() {
    let (mut rpcs, mut stray) = (Vec::new(), Vec::new());
    for (file, text) in PROTOS {
        let (r, s) = parse(file, text);
        rpcs.extend(r);
        stray.extend(s);
    }
    assert!(
        stray.is_empty(),
        "comments claim UNIMPLEMENTED where no RPC can be called to check it: {stray:?}"
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

    let (d, mut app) = spawn_app(Backend::Embedded).await;
    for rpc in &rpcs {
        let answer = call(&mut app, &rpc.service, &rpc.name).await;
        let code = answer.as_ref().err().map_or(Code::Ok, |s| s.code());
        let what = format!("{}/{}", rpc.service, rpc.name);
        if rpc.says_unimplemented {
            let s = answer.expect_err(&format!(
                "{what}: its comment says UNIMPLEMENTED; it answered OK"
            ));
            assert_eq!(
                s.code(),
                Code::Unimplemented,
                "{what}: its comment says UNIMPLEMENTED"
            );
            assert_eq!(reason(&s), "ERROR_REASON_NOT_IMPLEMENTED", "{what}");
        } else {
            assert_ne!(
                code,
                Code::Unimplemented,
                "{what} answers UNIMPLEMENTED but its comment does not say so: {answer:?}"
            );
        }
    }

    // Revoke by kid: a oneof case that once said UNIMPLEMENTED. An unknown
    // kid reaches the key manager, which answers, whatever it answers.
    let answer = app
        .revocation
        .revoke(RevokeRequest {
            target: Some(Target::Kid("no-such-kid".into())),
            ..Default::default()
        })
        .await;
    assert_ne!(
        answer.as_ref().err().map(|s| s.code()),
        Some(Code::Unimplemented),
        "Revoke{{kid}}: {answer:?}"
    );

    app.stop().await;
    d.cleanup().await;
}
