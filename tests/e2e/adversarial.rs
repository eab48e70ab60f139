//! The adversarial suite: a few hundred hostile tokens
//! against the real `Verify` of a real app, on both backends, each with the
//! one answer it must get (a `VerifyFailure`, valid, or a refused request),
//! asked in DEFAULT and in STRONG consistency; plus the discovery document
//! under a hostile `Host`. One app per backend runs the whole
//! table; every mismatch is listed by case name, and the count of each
//! group is printed.
//!
//! The deployment publishes one key of every algorithm (ES256, EdDSA and
//! RS256 retiring, PS256 active) so algorithm switches are tried between
//! real keys. Tokens are forged with those real keys, reached through the
//! key manager the harness exposes (`TestApp::manager`, whose
//! `signing_key()` is the active key: each is taken while it signs), so a
//! case fails only for the one rule it is about. Controls (cases that must
//! be valid) sit in each group, so a rule that refused everything would
//! fail too.

mod ask;
mod claims;
mod forge;
mod header;
mod identifiers;
mod names;
mod structure;

use crate::harness::{AUDIENCE, Backend, Deployment, TestApp, on_both_backends, spawn_app};
use ask::run;
use forge::{Kit, SUBJECT};
use std::collections::BTreeMap;
use std::sync::Arc;
use tessera_domain::keys::{Algorithm, SigningKey};
use tessera_proto::v1::revoke_request::Target;
use tessera_proto::v1::{
    CompromiseKeyRequest, Consistency, GetJwksRequest, IssuePurposeTokenRequest, JtiTarget,
    RotateKeysRequest, TokenKind, VerifyFailure,
};

on_both_backends!(every_hostile_token_gets_its_answer);

/// What a case must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `valid: true`.
    Valid,
    /// `valid: false` with this reason.
    Fails(VerifyFailure),
    /// Not a token Verify answers about (over 8 KiB): INVALID_ARGUMENT
    /// naming the `token` field.
    Refused,
    /// A request over the RPC's message limit (16 KiB), refused before it
    /// is read: INVALID_ARGUMENT naming `request`.
    TooLarge,
    /// Discovery: 200, and `jwks_uri` is the configured issuer's.
    IssuersJwks,
}

/// Shorthand for [`Verdict::Fails`].
pub const fn no(f: VerifyFailure) -> Verdict {
    Verdict::Fails(f)
}

/// What is sent.
pub enum Probe {
    Verify {
        token: String,
        audience: String,
        kind: TokenKind,
    },
    /// A raw HTTP/1.1 request.
    Http(String),
}

pub struct Case {
    name: String,
    group: &'static str,
    probe: Probe,
    verdict: Verdict,
}

/// The table, filled group by group.
#[derive(Default)]
pub struct Cases {
    list: Vec<Case>,
    group: &'static str,
}

impl Cases {
    pub fn group(&mut self, group: &'static str) {
        self.group = group;
    }

    /// A token presented as an access token for [`AUDIENCE`].
    pub fn add(&mut self, name: impl Into<String>, token: String, verdict: Verdict) {
        self.add_as(name, token, AUDIENCE, TokenKind::Access, verdict);
    }

    pub fn add_as(
        &mut self,
        name: impl Into<String>,
        token: String,
        audience: &str,
        kind: TokenKind,
        verdict: Verdict,
    ) {
        self.list.push(Case {
            name: name.into(),
            group: self.group,
            probe: Probe::Verify {
                token,
                audience: audience.into(),
                kind,
            },
            verdict,
        });
    }

    pub fn http(&mut self, name: impl Into<String>, request: String) {
        self.list.push(Case {
            name: name.into(),
            group: self.group,
            probe: Probe::Http(request),
            verdict: Verdict::IssuersJwks,
        });
    }
}

async fn every_hostile_token_gets_its_answer(backend: Backend) {
    let (mut d, app) = spawn_app(backend).await;
    let (mut app, keys) = publish_every_algorithm(&mut d, app).await;
    let mut kit = prepare(&d, &mut app, keys).await;
    let mut cases = Cases::default();
    header::alg(&kit, &mut cases);
    header::hmac_with_public_keys(&kit, &mut cases);
    header::algorithm_switches(&kit, &mut cases);
    header::signatures(&kit, &mut cases);
    header::parameters(&kit, &mut cases);
    names::kid(&kit, &mut cases);
    names::duplicates(&kit, &mut cases);
    claims::typ(&kit, &mut cases);
    claims::claims(&kit, &mut cases);
    structure::structure(&kit, &mut cases);
    structure::discovery(&mut cases);
    let before = crate::metrics::scrape(&app).await;
    let mut wrong = run(&app, &cases.list).await;
    wrong.extend(counted(
        &cases.list,
        &before,
        &crate::metrics::scrape(&app).await,
    ));
    // Last, as they end keys the table uses: a killed key, retired keys.
    let key_cases = key_lifecycle(&d, &mut app, &mut kit).await;
    wrong.extend(run(&app, &key_cases.list).await);
    cases.list.extend(key_cases.list);

    let mut names = std::collections::HashSet::new();
    for c in &cases.list {
        assert!(
            names.insert((c.group, &c.name)),
            "two cases named {}",
            c.name
        );
    }
    let mut groups: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &cases.list {
        *groups.entry(c.group).or_default() += 1;
    }
    eprintln!(
        "adversarial suite ({backend:?}): {} cases in {} groups",
        cases.list.len(),
        groups.len()
    );
    for (group, n) in &groups {
        eprintln!("  {group:<12} {n:>4}");
    }
    app.stop().await;
    d.cleanup().await;
    assert!(
        wrong.is_empty(),
        "{} of {} cases got the wrong answer:\n{}",
        wrong.len(),
        cases.list.len(),
        wrong.join("\n")
    );
}

/// Checks `tessera_verify_total` moved between the scrapes `before` and
/// `after` by exactly the answers `cases` got (each asked in both
/// consistencies): every reason the table reaches, `invalid_claim`
/// included, is counted under its own name. A line per mismatch.
fn counted(cases: &[Case], before: &str, after: &str) -> Vec<String> {
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for c in cases {
        let series = match c.verdict {
            Verdict::Valid => r#"{result="valid",reason="none"}"#.to_owned(),
            Verdict::Fails(f) => {
                let name = f.as_str_name().trim_start_matches("VERIFY_FAILURE_");
                format!(
                    r#"{{result="invalid",reason="{}"}}"#,
                    name.to_ascii_lowercase()
                )
            }
            // Refused before Verify runs: no answer to count.
            _ => continue,
        };
        *want
            .entry(format!("tessera_verify_total{series}"))
            .or_default() += 2.0;
    }
    assert!(want.keys().any(|k| k.contains("invalid_claim")));
    let moved = |series: &str| {
        let at = |text| crate::metrics::value(text, series).unwrap_or(f64::NAN);
        at(after) - at(before)
    };
    let mut wrong: Vec<String> = want
        .iter()
        .filter(|(series, n)| moved(series) != **n)
        .map(|(series, n)| format!("  {series}: want +{n}, got +{}", moved(series)))
        .collect();
    // And nothing else moved.
    for line in after
        .lines()
        .filter(|l| l.starts_with("tessera_verify_total{"))
    {
        let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
        if !want.contains_key(series) && moved(series) != 0.0 {
            wrong.push(format!("  {series}: want +0, got +{}", moved(series)));
        }
    }
    wrong
}

/// Restarts the deployment with each algorithm in turn and rotates, so one
/// key of every algorithm is published; returns each key as it signed.
async fn publish_every_algorithm(
    d: &mut Deployment,
    mut app: TestApp,
) -> (TestApp, Vec<Arc<SigningKey>>) {
    let signing = |app: &TestApp| app.manager.as_ref().unwrap().signing_key().unwrap();
    let mut keys = vec![signing(&app)];
    assert_eq!(keys[0].algorithm(), Algorithm::Es256);
    for alg in [Algorithm::EdDsa, Algorithm::Rs256, Algorithm::Ps256] {
        app.stop().await;
        d.keys.algorithm = alg;
        app = d.start().await;
        app.keys
            .rotate_keys(RotateKeysRequest::default())
            .await
            .unwrap();
        d.clock.advance(d.keys.publish_ahead);
        app.tick().await;
        keys.push(signing(&app));
        assert_eq!(keys.last().unwrap().algorithm(), alg);
    }
    (app, keys)
}

/// Real tokens from the real RPCs, and the revocations step 5 is tried on.
async fn prepare(d: &Deployment, app: &mut TestApp, keys: Vec<Arc<SigningKey>>) -> Kit {
    let jwks = app
        .keys
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap()
        .into_inner();
    let set: serde_json::Value = serde_json::from_str(&jwks.jwks_json).unwrap();
    let published = set["keys"].as_array().unwrap();
    assert_eq!(
        published.len(),
        5,
        "one key of each algorithm, and the standby behind the signing one"
    );
    let jwk_of = |kid: &str| published.iter().find(|j| j["kid"] == kid).unwrap().clone();
    let ver_of = |r: tessera_proto::v1::VerifyResponse| r.claims.unwrap().subject_version;

    let issued = app.issue(SUBJECT).await;
    let ver = ver_of(
        app.verify_with(&issued.access_token, Consistency::Default)
            .await,
    );
    let purpose = |kind: TokenKind| {
        let mut issuer = app.issuer.clone();
        async move {
            issuer
                .issue_purpose_token(IssuePurposeTokenRequest {
                    subject: SUBJECT.into(),
                    kind: kind.into(),
                    binding: String::new(),
                    ttl: None,
                })
                .await
                .unwrap()
                .into_inner()
                .token
        }
    };
    let email = purpose(TokenKind::EmailVerification).await;
    let reset = purpose(TokenKind::PasswordReset).await;

    let revoked_subject = "adv-revoked-subject".to_owned();
    let before = app.issue(&revoked_subject).await.access_token;
    app.revoke(Target::Subject(revoked_subject.clone())).await;
    let after = app.issue(&revoked_subject).await.access_token;
    let revoked_subject_ver = ver_of(app.verify_with(&after, Consistency::Default).await);

    let family = app.issue("adv-family").await;
    app.revoke(Target::FamilyId(family.family_id.clone())).await;
    let revoked_jti = tessera_domain::random_id();
    app.revoke(Target::Jti(JtiTarget {
        jti: revoked_jti.clone(),
        expires_at: Some(prost_types::Timestamp {
            seconds: d.clock_now() + 3600,
            nanos: 0,
        }),
    }))
    .await;

    let kit = Kit {
        now: d.clock_now(),
        jwks: keys.iter().map(|k| jwk_of(k.kid())).collect(),
        keys,
        jwks_json: jwks.jwks_json,
        ver,
        access: issued.access_token,
        refresh: issued.refresh_token,
        email,
        reset,
        revoked_subject,
        revoked_subject_ver,
        before_subject_revocation: before,
        revoked_family: family.family_id,
        family_token: family.access_token,
        revoked_jti,
    };
    forge::check_encodings(&kit);
    kit
}

/// A killed key and retired keys: their tokens, however fresh, fail.
async fn key_lifecycle(d: &Deployment, app: &mut TestApp, kit: &mut Kit) -> Cases {
    let mut c = Cases::default();
    c.group("key-state");
    let ed = kit.key(Algorithm::EdDsa);
    let before_kill = kit.valid(ed);
    assert_eq!(app.verify(&before_kill).await, Ok(()), "control");
    app.keys
        .compromise_key(CompromiseKeyRequest {
            kid: ed.kid().into(),
            reason: "adversarial suite".into(),
        })
        .await
        .unwrap();
    c.add(
        "a token signed before its key was killed",
        before_kill,
        no(VerifyFailure::UnknownKey),
    );
    c.add(
        "a token signed with a killed key",
        kit.valid(ed),
        no(VerifyFailure::UnknownKey),
    );

    // Past `retire_after`: every key that stopped signing leaves the set.
    d.clock.advance(d.keys.retire_after + 1);
    app.tick().await;
    kit.now = d.clock_now();
    for alg in [Algorithm::Es256, Algorithm::Rs256] {
        c.add(
            format!("a fresh token of the retired {} key", alg.name()),
            kit.valid(kit.key(alg)),
            no(VerifyFailure::UnknownKey),
        );
    }
    c.add(
        "a fresh token of the active PS256 key (control)",
        kit.valid(kit.key(Algorithm::Ps256)),
        Verdict::Valid,
    );
    c
}
