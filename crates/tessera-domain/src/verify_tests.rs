//! One test per pipeline step and per way of failing it. The fixture is
//! shared with `verify_rules_tests.rs` and `verify_props.rs`.

use super::*;
use crate::b64url_encode;
use crate::claims::Audience;
use crate::keys::{KeyMaterial, KeyState, SigningKey, VerifyingKey};
use crate::revocation::RevocationEvent;
use serde_json::json;

pub(super) const NOW: i64 = 1_700_000_000;

pub(super) struct Fx {
    pub(super) key: SigningKey,
    pub(super) keys: KeySet,
    pub(super) policy: Policy,
}

pub(super) fn fx() -> Fx {
    let m = KeyMaterial::generate(Algorithm::Es256, "k1").unwrap();
    let e = KeyMaterial::generate(Algorithm::EdDsa, "k2").unwrap();
    Fx {
        key: SigningKey::from_pkcs8("k1", Algorithm::Es256, &m.pkcs8).unwrap(),
        keys: KeySet::new([
            VerifyingKey::from_jwk(m.public_jwk, KeyState::Active).unwrap(),
            VerifyingKey::from_jwk(e.public_jwk, KeyState::Retiring).unwrap(),
        ]),
        policy: Policy::default(),
    }
}

pub(super) fn claims(policy: &Policy) -> Claims {
    Claims {
        iss: policy.issuer.clone(),
        sub: "alice".into(),
        aud: Audience::One("api".into()),
        exp: NOW + 600,
        nbf: NOW,
        iat: NOW,
        jti: "j1".into(),
        sid: Some("f1".into()),
        ver: 3,
        scope: None,
        client_id: None,
        extra: Default::default(),
    }
}

pub(super) const EXPECT: Expectation<'static> = Expectation {
    audience: "api",
    kind: TokenKind::Access,
};

pub(super) fn run(f: &Fx, token: &str, now: i64) -> Result<Claims, Failure> {
    verify(
        token,
        &f.keys,
        &f.policy,
        &EXPECT,
        &MemoryRevocations::new(),
        now,
    )
    .map(|s| s.claims)
}

/// A token with a hand-made header and payload, signed by the fixture key.
pub(super) fn forge(f: &Fx, header: &Value, payload: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64url_encode(header.to_string()),
        b64url_encode(payload.to_string())
    );
    let sig = f.key.sign_raw(input.as_bytes()).unwrap();
    format!("{input}.{}", b64url_encode(sig))
}

#[test]
fn a_good_token_passes_every_step() {
    let f = fx();
    let t = sign(&f.key, TokenKind::Access, &claims(&f.policy)).unwrap();
    let s = verify(
        &t,
        &f.keys,
        &f.policy,
        &EXPECT,
        &MemoryRevocations::new(),
        NOW + 1,
    )
    .unwrap();
    assert_eq!(s.claims, claims(&f.policy));
    assert_eq!(s.kid, "k1");
}

#[test]
fn step1_shape() {
    let f = fx();
    let good = sign(&f.key, TokenKind::Access, &claims(&f.policy)).unwrap();
    for bad in [
        String::new(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.e30.e30".into(),
        format!("{}.e30", good),
        "x".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        assert_eq!(
            run(&f, &bad, NOW).unwrap_err(),
            Failure::Malformed,
            "{bad:.40}"
        );
    }
    // Payload not an object; header not an object; duplicate header keys.
    let h = json!({"alg":"ES256","kid":"k1","typ":"at+jwt"});
    assert_eq!(
        run(&f, &forge(&f, &h, &json!([1])), NOW),
        Err(Failure::Malformed)
    );
    let arr = format!("{}.e30.AA", b64url_encode("[1]"));
    assert_eq!(run(&f, &arr, NOW), Err(Failure::Malformed));
    let dup = r#"{"alg":"ES256","kid":"k1","kid":"k2","typ":"at+jwt"}"#;
    let input = format!("{}.{}", b64url_encode(dup), b64url_encode("{}"));
    let sig = b64url_encode(f.key.sign_raw(input.as_bytes()).unwrap());
    assert_eq!(
        run(&f, &format!("{input}.{sig}"), NOW),
        Err(Failure::Malformed)
    );
}

#[test]
fn step2_header() {
    let f = fx();
    let p = serde_json::to_value(claims(&f.policy)).unwrap();
    let cases = [
        (
            json!({"alg":"none","kid":"k1","typ":"at+jwt"}),
            Failure::AlgorithmNotAllowed,
        ),
        (
            json!({"alg":"HS256","kid":"k1","typ":"at+jwt"}),
            Failure::AlgorithmNotAllowed,
        ),
        (
            json!({"alg":"es256","kid":"k1","typ":"at+jwt"}),
            Failure::AlgorithmNotAllowed,
        ),
        (
            json!({"kid":"k1","typ":"at+jwt"}),
            Failure::AlgorithmNotAllowed,
        ),
        // k2 is an EdDSA key: alg must be the key's own.
        (
            json!({"alg":"ES256","kid":"k2","typ":"at+jwt"}),
            Failure::AlgorithmNotAllowed,
        ),
        (json!({"alg":"ES256","typ":"at+jwt"}), Failure::UnknownKey),
        (
            json!({"alg":"ES256","kid":"nope","typ":"at+jwt"}),
            Failure::UnknownKey,
        ),
        (
            json!({"alg":"ES256","kid":"k1","jku":"http://x"}),
            Failure::UnsupportedHeader,
        ),
        (
            json!({"alg":"ES256","kid":"k1","x5u":"http://x"}),
            Failure::UnsupportedHeader,
        ),
        (
            json!({"alg":"ES256","kid":"k1","jwk":{}}),
            Failure::UnsupportedHeader,
        ),
        (
            json!({"alg":"ES256","kid":"k1","x5c":[]}),
            Failure::UnsupportedHeader,
        ),
        (
            json!({"alg":"ES256","kid":"k1","crit":["exp"]}),
            Failure::UnsupportedHeader,
        ),
    ];
    for (h, want) in cases {
        assert_eq!(run(&f, &forge(&f, &h, &p), NOW), Err(want), "{h}");
    }
    // An allowed algorithm can still be switched off by policy.
    let mut f2 = fx();
    f2.policy.allowed_algorithms = vec![Algorithm::EdDsa];
    let t = sign(&f2.key, TokenKind::Access, &claims(&f2.policy)).unwrap();
    assert_eq!(run(&f2, &t, NOW), Err(Failure::AlgorithmNotAllowed));
}

#[test]
fn step3_signature() {
    let f = fx();
    let t = sign(&f.key, TokenKind::Access, &claims(&f.policy)).unwrap();
    let (hp, _) = t.rsplit_once('.').unwrap();
    let (h, _) = hp.split_once('.').unwrap();
    let mut c = claims(&f.policy);
    c.sub = "mallory".into();
    let tampered = format!(
        "{h}.{}.{}",
        b64url_encode(serde_json::to_vec(&c).unwrap()),
        t.rsplit_once('.').unwrap().1
    );
    assert_eq!(run(&f, &tampered, NOW), Err(Failure::BadSignature));
    let other = KeyMaterial::generate(Algorithm::Es256, "k1").unwrap();
    let other = SigningKey::from_pkcs8("k1", Algorithm::Es256, &other.pkcs8).unwrap();
    let t2 = sign(&other, TokenKind::Access, &claims(&f.policy)).unwrap();
    assert_eq!(run(&f, &t2, NOW), Err(Failure::BadSignature));
    assert_eq!(
        run(&f, &format!("{hp}."), NOW),
        Err(Failure::Malformed),
        "empty signature"
    );
    assert_eq!(
        run(&f, &format!("{hp}.AAAA"), NOW),
        Err(Failure::BadSignature)
    );
}

#[test]
fn step4_claims() {
    let f = fx();
    let skew = f.policy.clock_skew;
    let t = sign(&f.key, TokenKind::Access, &claims(&f.policy)).unwrap();
    assert!(run(&f, &t, NOW + 600 + skew - 1).is_ok(), "inside skew");
    assert_eq!(run(&f, &t, NOW + 600 + skew), Err(Failure::Expired));
    assert!(run(&f, &t, NOW - skew).is_ok(), "nbf inside skew");
    assert_eq!(run(&f, &t, NOW - skew - 1), Err(Failure::NotYetValid));
    let mut c = claims(&f.policy);
    c.nbf = NOW - 10;
    c.iat = NOW + 100;
    let t = sign(&f.key, TokenKind::Access, &c).unwrap();
    assert_eq!(
        run(&f, &t, NOW),
        Err(Failure::NotYetValid),
        "iat in the future"
    );

    let mut c = claims(&f.policy);
    c.iss = "https://evil".into();
    let t = sign(&f.key, TokenKind::Access, &c).unwrap();
    assert_eq!(run(&f, &t, NOW), Err(Failure::WrongIssuer));

    let mut c = claims(&f.policy);
    c.aud = Audience::Many(vec!["a".into(), "api".into()]);
    let t = sign(&f.key, TokenKind::Access, &c).unwrap();
    assert!(
        run(&f, &t, NOW).is_ok(),
        "aud array containing the audience"
    );
    c.aud = Audience::One("other".into());
    let t = sign(&f.key, TokenKind::Access, &c).unwrap();
    assert_eq!(run(&f, &t, NOW), Err(Failure::WrongAudience));

    let t = sign(&f.key, TokenKind::PasswordReset, &claims(&f.policy)).unwrap();
    assert_eq!(run(&f, &t, NOW), Err(Failure::WrongTokenKind));
    let h = json!({"alg":"ES256","kid":"k1","typ":"JWT"});
    let t = forge(&f, &h, &serde_json::to_value(claims(&f.policy)).unwrap());
    assert_eq!(run(&f, &t, NOW), Err(Failure::WrongTokenKind));

    let h = json!({"alg":"ES256","kid":"k1","typ":"at+jwt"});
    let t = forge(&f, &h, &json!({"iss": f.policy.issuer, "sub": "a"}));
    assert_eq!(run(&f, &t, NOW), Err(Failure::MissingClaim));
}

#[test]
fn step5_revocation() {
    let f = fx();
    let t = sign(&f.key, TokenKind::Access, &claims(&f.policy)).unwrap();
    let events = [
        RevocationEvent::Jti {
            jti: "j1".into(),
            until: NOW + 700,
        },
        RevocationEvent::Family {
            family_id: "f1".into(),
            until: NOW + 700,
        },
        RevocationEvent::Subject {
            subject: "alice".into(),
            min_version: 4,
        },
        RevocationEvent::Key { kid: "k1".into() },
    ];
    for e in events {
        let view = MemoryRevocations::new();
        assert!(verify(&t, &f.keys, &f.policy, &EXPECT, &view, NOW).is_ok());
        view.apply(&e);
        assert_eq!(
            verify(&t, &f.keys, &f.policy, &EXPECT, &view, NOW).unwrap_err(),
            Failure::Revoked,
            "{e:?}"
        );
    }
}
