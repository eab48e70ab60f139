//! The authorization matrix: every RPC and HTTP endpoint, called by each
//! kind of principal (no key, an unknown key, a known caller without the
//! right, the token's owner, another caller of the same audience, a caller
//! of another audience, a `*` caller, and a caller removed by a reload),
//! against the expected code and `ErrorInfo` reason; on the embedded store,
//! on PostgreSQL + Redis with every open endpoint closed, and in the split
//! roles. Every refusal is then found in the audit trail: the audit counts
//! per (caller, RPC, reason) equal the refusals the matrix caused, no more,
//! no fewer. The README's callers section carries [`table`] verbatim
//! (`the_readme_carries_the_matrix`).

use crate::audit::events;
use crate::harness::{
    AUDIENCE, Backend, Deployment, as_caller, http_get, service_key, start_config,
};
use serde_json::Value;
use std::collections::BTreeMap;
use tessera::Role;
use tessera_proto::v1::introspection_service_client::IntrospectionServiceClient;
use tessera_proto::v1::issuer_service_client::IssuerServiceClient;
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::revocation_service_client::RevocationServiceClient;
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    CompromiseKeyRequest, Consistency, GetJwksRequest, IssuePurposeTokenRequest, IssueRequest,
    JtiTarget, ListKeysRequest, RedeemPurposeTokenRequest, RefreshRequest, RetireKeyRequest,
    RevokeRequest, RotateKeysRequest, TokenKind, VerifyRequest, WatchKeysRequest,
    WatchRevocationsRequest,
};
use tonic::Code;
use tonic::transport::Channel;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    /// No credential.
    NoKey,
    /// A service key no caller holds.
    UnknownKey,
    /// A known caller granted no RPC (`idle`).
    NoRight,
    /// The caller that obtained the tokens acted on (`owner`).
    Owner,
    /// Another caller of the owner's audience (`peer`; every right but
    /// `verify_strong`).
    SameAudience,
    /// A caller of another audience (`other`).
    OtherAudience,
    /// A caller of every audience (`star`).
    Star,
    /// A caller the owner's equal until a reload removed it (`gone`).
    Removed,
}

const WHO: [Who; 8] = [
    Who::NoKey,
    Who::UnknownKey,
    Who::NoRight,
    Who::Owner,
    Who::SameAudience,
    Who::OtherAudience,
    Who::Star,
    Who::Removed,
];

impl Who {
    /// The caller id the audit trail names.
    fn audit_name(self) -> &'static str {
        match self {
            Who::NoKey | Who::UnknownKey | Who::Removed => "unknown",
            Who::NoRight => "idle",
            Who::Owner => "owner",
            Who::SameAudience => "peer",
            Who::OtherAudience => "other",
            Who::Star => "star",
        }
    }

    fn column(self) -> &'static str {
        match self {
            Who::NoKey => "no key",
            Who::UnknownKey => "unknown key",
            Who::NoRight => "caller without the RPC",
            Who::Owner => "owner",
            Who::SameAudience => "same audience",
            Who::OtherAudience => "other audience",
            Who::Star => "`*` caller",
            Who::Removed => "removed by reload",
        }
    }
}

/// What is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ep {
    Issue,
    Refresh,
    IssuePurpose,
    Redeem,
    Verify,
    VerifyStrong,
    RevokeToken,
    RevokeFamily,
    RevokeJti,
    RevokeSubject,
    WatchRevocations,
    GetJwks,
    WatchKeys,
    ListKeys,
    RotateKeys,
    RetireKey,
    Health,
    HttpJwks,
    HttpDiscovery,
    HttpMetrics,
    HttpLivez,
    HttpReadyz,
    // Key kills last: each one replaces the signing key.
    RevokeKid,
    CompromiseKey,
}

const EPS: [Ep; 24] = [
    Ep::Issue,
    Ep::Refresh,
    Ep::IssuePurpose,
    Ep::Redeem,
    Ep::Verify,
    Ep::VerifyStrong,
    Ep::RevokeToken,
    Ep::RevokeFamily,
    Ep::RevokeJti,
    Ep::RevokeSubject,
    Ep::WatchRevocations,
    Ep::GetJwks,
    Ep::WatchKeys,
    Ep::ListKeys,
    Ep::RotateKeys,
    Ep::RetireKey,
    Ep::Health,
    Ep::HttpJwks,
    Ep::HttpDiscovery,
    Ep::HttpMetrics,
    Ep::HttpLivez,
    Ep::HttpReadyz,
    Ep::RevokeKid,
    Ep::CompromiseKey,
];

impl Ep {
    fn row(self) -> &'static str {
        match self {
            Ep::Issue => "`Issue` (owner's audience)",
            Ep::Refresh => "`Refresh` (owner's refresh token)",
            Ep::IssuePurpose => "`IssuePurposeToken`",
            Ep::Redeem => "`RedeemPurposeToken` (owner's token)",
            Ep::Verify => "`Verify` DEFAULT (owner's audience)",
            Ep::VerifyStrong => "`Verify` STRONG (owner's audience)",
            Ep::RevokeToken => "`Revoke{token}` (owner's token)",
            Ep::RevokeFamily => "`Revoke{family_id}` (owner's session)",
            Ep::RevokeJti => "`Revoke{jti}`",
            Ep::RevokeSubject => "`Revoke{subject}`",
            Ep::RevokeKid => "`Revoke{kid}` (the active key)",
            Ep::WatchRevocations => "`WatchRevocations`",
            Ep::GetJwks => "`GetJwks`",
            Ep::WatchKeys => "`WatchKeys`",
            Ep::ListKeys => "`ListKeys`",
            Ep::RotateKeys => "`RotateKeys`",
            Ep::RetireKey => "`RetireKey` (an unknown kid)",
            Ep::CompromiseKey => "`CompromiseKey` (the active key)",
            Ep::Health => "gRPC health `Check`",
            Ep::HttpJwks => "`GET /.well-known/jwks.json`",
            Ep::HttpDiscovery => "`GET /.well-known/openid-configuration`",
            Ep::HttpMetrics => "`GET /metrics`",
            Ep::HttpLivez => "`GET /livez`",
            Ep::HttpReadyz => "`GET /readyz`",
        }
    }

    /// Open by default (the callers file's `[access]`), closed in one run.
    fn openable(self) -> bool {
        matches!(
            self,
            Ep::GetJwks
                | Ep::WatchKeys
                | Ep::Health
                | Ep::HttpJwks
                | Ep::HttpDiscovery
                | Ep::HttpMetrics
                | Ep::HttpLivez
                | Ep::HttpReadyz
        )
    }

    /// The RPC (or HTTP class) the audit trail names.
    fn audit_rpc(self) -> &'static str {
        match self {
            Ep::Issue => "Issue",
            Ep::Refresh => "Refresh",
            Ep::IssuePurpose => "IssuePurposeToken",
            Ep::Redeem => "RedeemPurposeToken",
            Ep::Verify | Ep::VerifyStrong => "Verify",
            Ep::RevokeToken
            | Ep::RevokeFamily
            | Ep::RevokeJti
            | Ep::RevokeSubject
            | Ep::RevokeKid => "Revoke",
            Ep::WatchRevocations => "WatchRevocations",
            Ep::GetJwks => "GetJwks",
            Ep::WatchKeys => "WatchKeys",
            Ep::ListKeys => "ListKeys",
            Ep::RotateKeys => "RotateKeys",
            Ep::RetireKey => "RetireKey",
            Ep::CompromiseKey => "CompromiseKey",
            Ep::Health | Ep::HttpMetrics | Ep::HttpLivez | Ep::HttpReadyz => "health",
            Ep::HttpJwks | Ep::HttpDiscovery => "jwks",
        }
    }
}

/// An answer: OK, or a code and its `ErrorInfo` reason.
type Answer = Result<(), (Code, &'static str)>;

const UNKNOWN: Answer = Err((Code::Unauthenticated, "ERROR_REASON_CALLER_UNKNOWN"));
const NOT_ALLOWED: Answer = Err((Code::PermissionDenied, "ERROR_REASON_CALLER_NOT_ALLOWED"));
const OWNER_MISMATCH: Answer = Err((Code::PermissionDenied, "ERROR_REASON_TOKEN_OWNER_MISMATCH"));

/// The expected answer. `closed`: every open endpoint needs a known caller.
fn expect(ep: Ep, who: Who, closed: bool) -> Answer {
    if ep.openable() && !closed {
        return Ok(());
    }
    match who {
        Who::NoKey | Who::UnknownKey | Who::Removed => return UNKNOWN,
        // The JWKS and health, when closed, need any known caller.
        Who::NoRight if ep.openable() => return Ok(()),
        Who::NoRight => return NOT_ALLOWED,
        _ => {}
    }
    let other = who == Who::OtherAudience;
    match ep {
        // Bound to the audience: a caller of another audience is refused.
        Ep::Issue | Ep::Verify | Ep::RevokeToken | Ep::RevokeFamily if other => NOT_ALLOWED,
        Ep::VerifyStrong if other || who == Who::SameAudience => NOT_ALLOWED,
        // A named right that reaches every audience: only `*` holds it here.
        Ep::RevokeJti if who != Who::Star => NOT_ALLOWED,
        // Bound to the caller that obtained the token.
        Ep::Refresh | Ep::Redeem if who != Who::Owner => OWNER_MISMATCH,
        Ep::RetireKey => Err((Code::NotFound, "ERROR_REASON_KEY_NOT_FOUND")),
        _ => Ok(()),
    }
}

/// The README's table: default `[access]`.
fn table() -> String {
    let short = |a: Answer| match a {
        Ok(()) => "OK",
        Err((_, "ERROR_REASON_CALLER_UNKNOWN")) => "UNAUTHENTICATED",
        Err((_, "ERROR_REASON_CALLER_NOT_ALLOWED")) => "DENIED",
        Err((_, "ERROR_REASON_TOKEN_OWNER_MISMATCH")) => "OWNER_MISMATCH",
        Err((_, "ERROR_REASON_KEY_NOT_FOUND")) => "NOT_FOUND",
        Err(_) => unreachable!(),
    };
    let mut out = format!(
        "| endpoint | {} |\n|---|{}\n",
        WHO.map(Who::column).join(" | "),
        "---|".repeat(WHO.len())
    );
    for ep in EPS {
        let cells = WHO.map(|w| short(expect(ep, w, false)));
        out.push_str(&format!("| {} | {} |\n", ep.row(), cells.join(" | ")));
    }
    out
}

#[test]
fn the_readme_carries_the_matrix() {
    let readme = include_str!("../../README.md");
    let start = "<!-- authorization-matrix:start -->\n";
    let inner = readme
        .split_once(start)
        .and_then(|(_, rest)| rest.split_once("<!-- authorization-matrix:end -->"))
        .map(|(inner, _)| inner)
        .expect("the README's matrix markers");
    assert_eq!(
        inner,
        table(),
        "the README's matrix is not the tested one; it should read:\n{}",
        table()
    );
}

/// Every RPC, for the audiences given; `verify_strong` and the `jti`
/// revocation right (which reaches every audience) as asked.
fn full(id: &str, hash: &str, audiences: &str, (strong, jti): (bool, bool)) -> String {
    let jti = if jti { "\"jti\", " } else { "" };
    format!(
        "[[caller]]\nid = \"{id}\"\nkey_sha256 = [\"{hash}\"]\n\
         rpcs = [\"Issue\", \"Refresh\", \"IssuePurposeToken\", \"RedeemPurposeToken\", \"Verify\", \
         \"Revoke\", \"WatchRevocations\", \"GetJwks\", \"WatchKeys\", \"CompromiseKey\"]\n\
         keys_admin = true\naudiences = [{audiences}]\n\
         revoke = [{jti}\"token\", \"family\", \"subject\", \"kid\"]\nverify_strong = {strong}\n\n"
    )
}

/// The keys of each principal, and the callers file they are named in.
struct Principals {
    keys: BTreeMap<Who, String>,
    service: [(String, String); 2],
    hashes: BTreeMap<Who, String>,
}

impl Principals {
    fn new() -> Self {
        let mut keys = BTreeMap::new();
        let mut hashes = BTreeMap::new();
        for w in WHO {
            let (k, h) = service_key();
            if w != Who::NoKey {
                keys.insert(w, k);
            }
            hashes.insert(w, h);
        }
        Self {
            keys,
            hashes,
            service: [service_key(), service_key()],
        }
    }

    /// The callers file, with or without the caller a reload removes.
    fn file(&self, closed: bool, with_removed: bool) -> String {
        let h = |w: Who| self.hashes[&w].clone();
        let a = format!("\"{AUDIENCE}\"");
        let mut text = String::new();
        if closed {
            text.push_str("[access]\njwks = \"caller\"\nhealth = \"caller\"\n\n");
        }
        text.push_str(&format!(
            "[[caller]]\nid = \"idle\"\nkey_sha256 = [\"{}\"]\naudiences = [{a}]\n\n",
            h(Who::NoRight)
        ));
        text.push_str(&full("owner", &h(Who::Owner), &a, (true, false)));
        text.push_str(&full("peer", &h(Who::SameAudience), &a, (false, false)));
        let billing = "\"billing\"";
        text.push_str(&full(
            "other",
            &h(Who::OtherAudience),
            billing,
            (true, false),
        ));
        text.push_str(&full("star", &h(Who::Star), "\"*\"", (true, true)));
        if with_removed {
            text.push_str(&full("gone", &h(Who::Removed), &a, (true, false)));
        }
        let [(_, issuer), (_, verifier)] = &self.service;
        text.push_str(&format!(
            "[[caller]]\nid = \"tessera-issuer\"\nkey_sha256 = [\"{issuer}\"]\nrpcs = [\"Revoke\"]\n\
             audiences = [\"*\"]\nrevoke = [\"family\", \"subject\", \"kid\"]\nrelay = true\n\n\
             [[caller]]\nid = \"tessera-verifier\"\nkey_sha256 = [\"{verifier}\"]\n\
             rpcs = [\"GetJwks\", \"WatchKeys\", \"CompromiseKey\"]\nrelay = true\n"
        ));
        text
    }
}

/// Where each service is reached.
struct Targets {
    /// Issuer, purpose tokens, keys, health and HTTP.
    issuer: Channel,
    issuer_addr: std::net::SocketAddr,
    /// Verify, Revoke, WatchRevocations.
    verifier: Channel,
}

/// What the owner obtained for one cell.
struct Fixture {
    access: String,
    refresh: String,
    family: String,
    jti: String,
    purpose: String,
    kid: String,
    subject: String,
}

async fn fixture(t: &Targets, owner: &str, subject: String) -> Fixture {
    let mut issuer = IssuerServiceClient::new(t.issuer.clone());
    let login = issuer
        .issue(as_caller(issue_request(&subject), owner))
        .await
        .expect("the owner's login")
        .into_inner();
    let purpose = issuer
        .issue_purpose_token(as_caller(purpose_request(&subject), owner))
        .await
        .expect("the owner's purpose token")
        .into_inner()
        .token;
    Fixture {
        kid: crate::harness::kid_of(&login.access_token),
        access: login.access_token,
        refresh: login.refresh_token,
        family: login.family_id,
        jti: login.access_token_id,
        purpose,
        subject,
    }
}

fn issue_request(subject: &str) -> IssueRequest {
    IssueRequest {
        subject: subject.into(),
        audience: AUDIENCE.into(),
        ..Default::default()
    }
}

fn purpose_request(subject: &str) -> IssuePurposeTokenRequest {
    IssuePurposeTokenRequest {
        subject: subject.into(),
        kind: TokenKind::PasswordReset.into(),
        binding: String::new(),
        ttl: None,
    }
}

/// `message` with `key` as its bearer credential, or none.
fn req<T>(message: T, key: Option<&str>) -> tonic::Request<T> {
    match key {
        Some(k) => as_caller(message, k),
        None => tonic::Request::new(message),
    }
}

fn answer<T>(r: Result<T, tonic::Status>) -> Result<(), (Code, String)> {
    r.map(drop)
        .map_err(|s| (s.code(), crate::harness::reason(&s)))
}

fn revoke(target: Target) -> RevokeRequest {
    RevokeRequest {
        target: Some(target),
        reason: "matrix".into(),
    }
}

/// The target of a `Revoke` endpoint (`None` for the others).
fn revoke_target(ep: Ep, fx: &Fixture, now: i64) -> Option<Target> {
    Some(match ep {
        Ep::RevokeToken => Target::Token(fx.access.clone()),
        Ep::RevokeFamily => Target::FamilyId(fx.family.clone()),
        Ep::RevokeJti => Target::Jti(JtiTarget {
            jti: fx.jti.clone(),
            expires_at: Some(prost_types::Timestamp {
                seconds: now + 600,
                nanos: 0,
            }),
        }),
        Ep::RevokeSubject => Target::Subject(fx.subject.clone()),
        Ep::RevokeKid => Target::Kid(fx.kid.clone()),
        _ => return None,
    })
}

/// One call of `ep` with `key`; its code and reason.
async fn call(
    ep: Ep,
    key: Option<&str>,
    fx: &Fixture,
    t: &Targets,
    now: i64,
) -> Result<(), (Code, String)> {
    let mut issuer = IssuerServiceClient::new(t.issuer.clone());
    let mut keys = KeyServiceClient::new(t.issuer.clone());
    let mut intro = IntrospectionServiceClient::new(t.verifier.clone());
    let mut revocation = RevocationServiceClient::new(t.verifier.clone());
    let verify = |consistency: Consistency| VerifyRequest {
        token: fx.access.clone(),
        expected_audience: AUDIENCE.into(),
        expected_kind: TokenKind::Access.into(),
        consistency: consistency.into(),
    };
    if let Some(target) = revoke_target(ep, fx, now) {
        return answer(revocation.revoke(req(revoke(target), key)).await);
    }
    match ep {
        Ep::Issue => answer(issuer.issue(req(issue_request(&fx.subject), key)).await),
        Ep::Refresh => {
            let r = RefreshRequest {
                refresh_token: fx.refresh.clone(),
                scopes: vec![],
            };
            answer(issuer.refresh(req(r, key)).await)
        }
        Ep::IssuePurpose => answer(
            issuer
                .issue_purpose_token(req(purpose_request(&fx.subject), key))
                .await,
        ),
        Ep::Redeem => {
            let r = RedeemPurposeTokenRequest {
                token: fx.purpose.clone(),
                kind: TokenKind::PasswordReset.into(),
                binding: String::new(),
                revoke_subject_sessions: false,
            };
            answer(issuer.redeem_purpose_token(req(r, key)).await)
        }
        Ep::Verify => answer(intro.verify(req(verify(Consistency::Default), key)).await),
        Ep::VerifyStrong => answer(intro.verify(req(verify(Consistency::Strong), key)).await),
        Ep::WatchRevocations => answer(
            revocation
                .watch_revocations(req(WatchRevocationsRequest { after_id: 0 }, key))
                .await,
        ),
        Ep::GetJwks => answer(keys.get_jwks(req(GetJwksRequest {}, key)).await),
        Ep::WatchKeys => answer(keys.watch_keys(req(WatchKeysRequest {}, key)).await),
        Ep::ListKeys => answer(keys.list_keys(req(ListKeysRequest {}, key)).await),
        Ep::RotateKeys => answer(
            keys.rotate_keys(req(RotateKeysRequest::default(), key))
                .await,
        ),
        Ep::RetireKey => {
            let r = RetireKeyRequest {
                kid: "no-such-kid".into(),
            };
            answer(keys.retire_key(req(r, key)).await)
        }
        Ep::CompromiseKey => {
            let r = CompromiseKeyRequest {
                kid: fx.kid.clone(),
                reason: "matrix".into(),
            };
            answer(keys.compromise_key(req(r, key)).await)
        }
        Ep::Health => {
            use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
            let mut h = HealthClient::new(t.issuer.clone());
            answer(h.check(req(HealthCheckRequest::default(), key)).await)
        }
        Ep::HttpJwks => http(t, "/.well-known/jwks.json", key).await,
        Ep::HttpDiscovery => http(t, "/.well-known/openid-configuration", key).await,
        Ep::HttpMetrics => http(t, "/metrics", key).await,
        Ep::HttpLivez => http(t, "/livez", key).await,
        Ep::HttpReadyz => http(t, "/readyz", key).await,
        Ep::RevokeToken | Ep::RevokeFamily | Ep::RevokeJti | Ep::RevokeSubject | Ep::RevokeKid => {
            unreachable!("answered above")
        }
    }
}

/// An HTTP GET, its status read as the gRPC refusal it stands for.
async fn http(t: &Targets, path: &str, key: Option<&str>) -> Result<(), (Code, String)> {
    let header = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let (status, _, body) = http_get(t.issuer_addr, path, &header).await;
    match status {
        200 => Ok(()),
        401 => Err((Code::Unauthenticated, "ERROR_REASON_CALLER_UNKNOWN".into())),
        403 => Err((
            Code::PermissionDenied,
            "ERROR_REASON_CALLER_NOT_ALLOWED".into(),
        )),
        other => panic!("{path}: HTTP {other}: {body}"),
    }
}

/// The audit key of a refusal: (event, caller, RPC or token, reason).
type AuditKey = (String, String, String, String);

fn audit_key(ep: Ep, who: Who, reason: &str) -> AuditKey {
    if reason == "ERROR_REASON_TOKEN_OWNER_MISMATCH" {
        let token = if ep == Ep::Refresh {
            "refresh"
        } else {
            "purpose"
        };
        return (
            "token_owner_mismatch".into(),
            who.audit_name().into(),
            token.into(),
            String::new(),
        );
    }
    (
        "caller_denied".into(),
        who.audit_name().into(),
        ep.audit_rpc().into(),
        reason.into(),
    )
}

/// The refusals in the trail, counted by key (a summary counts `count`).
fn audited(trail: &[Value]) -> BTreeMap<AuditKey, u64> {
    let mut counts = BTreeMap::new();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    for e in trail {
        let key = match e["event"].as_str() {
            Some("caller_denied") => (
                s(&e["event"]),
                s(&e["caller"]),
                s(&e["rpc"]),
                s(&e["reason"]),
            ),
            Some("token_owner_mismatch") => {
                assert_eq!(e["owner"], "owner", "both callers named: {e}");
                (
                    s(&e["event"]),
                    s(&e["caller"]),
                    s(&e["token"]),
                    String::new(),
                )
            }
            _ => continue,
        };
        *counts.entry(key).or_default() += e["count"].as_u64().unwrap_or(1);
    }
    counts
}

/// Runs the whole matrix against `t`; the refusals it caused, by audit key,
/// and the number of cells.
async fn run(
    t: &Targets,
    p: &Principals,
    closed: bool,
    now: i64,
) -> (BTreeMap<AuditKey, u64>, usize) {
    let owner = p.keys[&Who::Owner].clone();
    let mut refused = BTreeMap::new();
    let mut cells = 0;
    let mut wrong = Vec::new();
    for ep in EPS {
        for who in WHO {
            let fx = fixture(t, &owner, format!("m-{ep:?}-{who:?}")).await;
            let got = call(ep, p.keys.get(&who).map(String::as_str), &fx, t, now).await;
            let want = expect(ep, who, closed);
            cells += 1;
            if got.as_ref().map(|_| ()).map_err(|(c, r)| (*c, r.as_str())) != want {
                wrong.push(format!("{ep:?} by {who:?}: got {got:?}, want {want:?}"));
            }
            if let Err((_, reason)) = want
                && reason != "ERROR_REASON_KEY_NOT_FOUND"
            {
                *refused.entry(audit_key(ep, who, reason)).or_default() += 1;
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {cells} cells differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    (refused, cells)
}

/// Replaces the callers file whole and waits until `gone` is refused.
async fn remove_gone(path: &std::path::Path, text: &str, t: &Targets, key: &str) {
    // `gone` works until the reload.
    let mut issuer = IssuerServiceClient::new(t.issuer.clone());
    issuer
        .issue(as_caller(issue_request("before-reload"), key))
        .await
        .expect("gone is a caller before the reload");
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
    crate::harness::eventually("the reload removes gone", || {
        let mut i = issuer.clone();
        async move {
            i.issue(as_caller(issue_request("after-reload"), key))
                .await
                .is_err_and(|s| s.code() == Code::Unauthenticated)
        }
    })
    .await;
    // …and at the verifier, another process in the split roles, which
    // reloads on its own time.
    let verifier = IntrospectionServiceClient::new(t.verifier.clone());
    crate::harness::eventually("the verifier's reload removes gone", || {
        let mut v = verifier.clone();
        async move {
            v.verify(as_caller(VerifyRequest::default(), key))
                .await
                .is_err_and(|s| s.code() == Code::Unauthenticated)
        }
    })
    .await;
}

/// Which deployment the matrix runs on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// SQLite, one process, default `[access]`.
    Embedded,
    /// PostgreSQL + Redis, one process, every open endpoint closed.
    SharedClosed,
    /// PostgreSQL + Redis, an issuer and a verifier process.
    Split,
}

async fn matrix(shape: Shape) {
    use tracing_subscriber::prelude::*;
    let (layer, buffer) = tessera::audit_log::capture();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let backend = if shape == Shape::Embedded {
        Backend::Embedded
    } else {
        Backend::Distributed
    };
    let closed = shape == Shape::SharedClosed;
    let d = Deployment::new(backend).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let p = Principals::new();
    let file = d.data_dir.join("callers.toml");
    std::fs::write(&file, p.file(closed, true)).unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file.clone());
    let mut apps = Vec::new();
    let targets = if shape == Shape::Split {
        let [(issuer_key, _), (verifier_key, _)] = p.service.clone();
        let port = crate::harness::free_port();
        cfg.role = Role::Issuer;
        cfg.revocation_endpoint = Some(format!("http://127.0.0.1:{port}"));
        cfg.edge.service_key = Some(tessera_domain::Secret::new(issuer_key.into_bytes()));
        let issuer = start_config(cfg.clone()).await;
        cfg.role = Role::Introspection;
        cfg.revocation_endpoint = None;
        cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
        cfg.issuer_endpoint = Some(format!("http://{}", issuer.0.addr));
        cfg.edge.service_key = Some(tessera_domain::Secret::new(verifier_key.into_bytes()));
        let verifier = start_config(cfg).await;
        let t = Targets {
            issuer: issuer.0.channel.clone(),
            issuer_addr: issuer.0.addr,
            verifier: verifier.0.channel.clone(),
        };
        apps.extend([issuer, verifier]);
        t
    } else {
        let app = start_config(cfg).await;
        let t = Targets {
            issuer: app.0.channel.clone(),
            issuer_addr: app.0.addr,
            verifier: app.0.channel.clone(),
        };
        apps.push(app);
        t
    };
    remove_gone(
        &file,
        &p.file(closed, false),
        &targets,
        &p.keys[&Who::Removed],
    )
    .await;
    let (mut refused, cells) = run(&targets, &p, closed, d.clock_now()).await;
    // The calls that saw the reload (at the issuer and at the verifier)
    // were refused too.
    for ep in [Ep::Issue, Ep::Verify] {
        *refused
            .entry(audit_key(ep, Who::Removed, UNKNOWN.unwrap_err().1))
            .or_default() += 1;
    }
    // Stopped, so the last summaries of refusals at the edge are written.
    for (app, stop, handle) in apps {
        let _ = stop.send(());
        let _ = handle.await;
        drop(app);
    }
    let found = audited(&events(&buffer));
    assert_eq!(
        found, refused,
        "every refusal of the matrix, and nothing else, is in the audit trail"
    );
    let denials: u64 = refused.values().sum::<u64>() - 1;
    println!(
        "authorization matrix: {cells} cells, {denials} refusals, each found in the audit trail"
    );
    d.cleanup().await;
}

/// A current-thread runtime: every task of the deployment runs under the
/// subscriber this test sets, so the audit trail is captured whole.
#[tokio::test]
async fn the_matrix_holds_on_the_embedded_store() {
    matrix(Shape::Embedded).await;
}

#[tokio::test]
async fn the_matrix_holds_on_postgres_and_redis_with_everything_closed() {
    matrix(Shape::SharedClosed).await;
}

#[tokio::test]
async fn the_matrix_holds_in_the_split_roles() {
    matrix(Shape::Split).await;
}

/// Credential forms: one `Bearer <key>` (the scheme in any case) is the
/// only one; any other `authorization` header is refused as
/// UNAUTHENTICATED saying it is malformed, never ignored. And a caller
/// that is no Tessera service cannot claim to act for another.
#[tokio::test]
async fn only_one_bearer_key_is_a_credential() {
    let d = Deployment::new(Backend::Embedded).await;
    std::fs::create_dir_all(&d.data_dir).unwrap();
    let p = Principals::new();
    let file = d.data_dir.join("callers.toml");
    std::fs::write(&file, p.file(false, false)).unwrap();
    let mut cfg = d.config();
    cfg.edge.callers_file = Some(file);
    let (app, stop, handle) = start_config(cfg).await;
    let key = &p.keys[&Who::Owner];
    let call = |headers: Vec<String>| {
        let mut issuer = app.issuer.clone();
        async move {
            let mut r = tonic::Request::new(issue_request("forms"));
            for h in headers {
                r.metadata_mut().append("authorization", h.parse().unwrap());
            }
            issuer.issue(r).await
        }
    };
    for ok in [
        format!("Bearer {key}"),
        format!("bearer {key}"),
        format!("BEARER {key}"),
    ] {
        assert!(call(vec![ok]).await.is_ok());
    }
    for bad in [
        vec![format!("Basic {key}")],
        vec!["Bearer".to_owned()],
        vec![format!("Bearer {key} {key}")],
        vec![format!("Bearer {key}"), format!("Bearer {key}")],
    ] {
        let s = call(bad.clone()).await.unwrap_err();
        assert_eq!(s.code(), Code::Unauthenticated, "{bad:?}");
        assert_eq!(crate::harness::reason(&s), "ERROR_REASON_CALLER_UNKNOWN");
        assert!(s.message().contains("malformed"), "{}", s.message());
        assert!(!s.message().contains(key.as_str()), "no key in the answer");
    }
    // Acting for another caller is for Tessera's own services (`relay`).
    let mut forged = as_caller(issue_request("forms"), key);
    forged
        .metadata_mut()
        .insert("x-tessera-on-behalf-of", "star".parse().unwrap());
    let s = app.issuer.clone().issue(forged).await.unwrap_err();
    assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
    assert!(s.message().contains("relay"), "{}", s.message());
    let _ = stop.send(());
    let _ = handle.await;
    drop(app);
    d.cleanup().await;
}
