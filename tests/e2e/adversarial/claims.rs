//! Cases about what a token says: `typ` confusion across access, refresh
//! and purpose tokens, and claim edge cases signed with the real key (so
//! only the claim rule can refuse them).

use super::forge::{Kit, SUBJECT};
use super::{Cases, Verdict, no};
use crate::harness::{AUDIENCE, ISSUER};
use serde_json::{Value, json};
use tessera_domain::verify::MAX_NUMERIC_DATE;
use tessera_proto::v1::{TokenKind as K, VerifyFailure as F};

const EMAIL_AUD: &str = "urn:tessera:email-verification";
const RESET_AUD: &str = "urn:tessera:password-reset";

/// A token of one kind presented where another is expected; `typ` mangled.
pub fn typ(k: &Kit, c: &mut Cases) {
    c.group("typ");
    let access = &k.access;
    for (name, token, aud, kind, verdict) in [
        (
            "access as access (control)",
            access,
            AUDIENCE,
            K::Access,
            Verdict::Valid,
        ),
        (
            "access as email verification",
            access,
            AUDIENCE,
            K::EmailVerification,
            no(F::WrongTokenKind),
        ),
        (
            "access as password reset",
            access,
            AUDIENCE,
            K::PasswordReset,
            no(F::WrongTokenKind),
        ),
        (
            "email verification as email verification (control)",
            &k.email,
            EMAIL_AUD,
            K::EmailVerification,
            Verdict::Valid,
        ),
        (
            "email verification as access",
            &k.email,
            AUDIENCE,
            K::Access,
            no(F::WrongAudience),
        ),
        (
            "email verification as access, its own audience",
            &k.email,
            EMAIL_AUD,
            K::Access,
            no(F::WrongTokenKind),
        ),
        (
            "email verification as password reset",
            &k.email,
            EMAIL_AUD,
            K::PasswordReset,
            no(F::WrongTokenKind),
        ),
        (
            "password reset as password reset (control)",
            &k.reset,
            RESET_AUD,
            K::PasswordReset,
            Verdict::Valid,
        ),
        (
            "password reset as access, its own audience",
            &k.reset,
            RESET_AUD,
            K::Access,
            no(F::WrongTokenKind),
        ),
        (
            "password reset as email verification",
            &k.reset,
            RESET_AUD,
            K::EmailVerification,
            no(F::WrongTokenKind),
        ),
        (
            "refresh token as access",
            &k.refresh,
            AUDIENCE,
            K::Access,
            no(F::Malformed),
        ),
        (
            "refresh token as password reset",
            &k.refresh,
            RESET_AUD,
            K::PasswordReset,
            no(F::Malformed),
        ),
    ] {
        c.add_as(name, token.clone(), aud, kind, verdict);
    }
    let es = k.es();
    let p = k.claims();
    for (name, typ, verdict) in [
        ("missing", None, no(F::WrongTokenKind)),
        ("JWT", Some(json!("JWT")), no(F::WrongTokenKind)),
        ("jwt", Some(json!("jwt")), no(F::WrongTokenKind)),
        ("empty", Some(json!("")), no(F::WrongTokenKind)),
        ("null", Some(json!(null)), no(F::WrongTokenKind)),
        ("number", Some(json!(1)), no(F::WrongTokenKind)),
        ("array", Some(json!(["at+jwt"])), no(F::WrongTokenKind)),
        (
            "with a space",
            Some(json!("at+jwt ")),
            no(F::WrongTokenKind),
        ),
        ("at-jwt", Some(json!("at-jwt")), no(F::WrongTokenKind)),
        (
            "refresh+jwt",
            Some(json!("refresh+jwt")),
            no(F::WrongTokenKind),
        ),
        (
            "application/jwt",
            Some(json!("application/jwt")),
            no(F::WrongTokenKind),
        ),
        (
            "text/at+jwt",
            Some(json!("text/at+jwt")),
            no(F::WrongTokenKind),
        ),
        (
            "a purpose typ",
            Some(json!("password-reset+jwt")),
            no(F::WrongTokenKind),
        ),
        // Media types compare case-insensitively, `application/` optional
        // (RFC 7515 §4.1.9, RFC 8725 §3.11): the same type, so valid.
        ("AT+JWT (control)", Some(json!("AT+JWT")), Verdict::Valid),
        (
            "application/at+jwt (control)",
            Some(json!("application/at+jwt")),
            Verdict::Valid,
        ),
        (
            "Application/At+Jwt (control)",
            Some(json!("Application/At+Jwt")),
            Verdict::Valid,
        ),
    ] {
        let mut h = k.header(es);
        match typ {
            Some(t) => h["typ"] = t,
            None => {
                h.as_object_mut().unwrap().remove("typ");
            }
        }
        c.add(format!("typ {name}"), k.sign(es, &h, &p), verdict);
    }
    // `typ` as a claim is not the header parameter.
    let mut h = k.header(es);
    h.as_object_mut().unwrap().remove("typ");
    let p = k.claims_with("typ", Some(json!("at+jwt")));
    c.add(
        "typ only as a claim",
        k.sign(es, &h, &p),
        no(F::WrongTokenKind),
    );
}

/// NumericDates, issuer, audience, identifiers and revocation claims.
pub fn claims(k: &Kit, c: &mut Cases) {
    c.group("claims");
    let es = k.es();
    let now = k.now;
    let case = |c: &mut Cases, name: &str, claim: &str, value: Option<Value>, verdict: Verdict| {
        let what = value
            .as_ref()
            .map_or("missing".to_owned(), Value::to_string);
        let p = k.claims_with(claim, value);
        c.add(
            format!("{claim} {name} ({what:.40})"),
            k.sign(es, &k.header(es), &p),
            verdict,
        );
    };
    let invalid = no(F::InvalidClaim);
    for date in ["exp", "nbf", "iat"] {
        let t = if date == "exp" { now + 600 } else { now };
        case(c, "as a string", date, Some(json!(t.to_string())), invalid);
        case(
            c,
            "as a fraction",
            date,
            Some(json!(t as f64 + 0.5)),
            invalid,
        );
        case(c, "as a whole float", date, Some(json!(t as f64)), invalid);
        case(c, "huge", date, Some(json!(1e30)), invalid);
        case(c, "u64::MAX", date, Some(json!(u64::MAX)), invalid);
        case(c, "i64::MAX", date, Some(json!(i64::MAX)), invalid);
        case(
            c,
            "past year 9999",
            date,
            Some(json!(MAX_NUMERIC_DATE + 1)),
            invalid,
        );
        case(c, "negative", date, Some(json!(-1)), invalid);
        case(c, "null", date, Some(json!(null)), invalid);
        case(c, "an array", date, Some(json!([t])), invalid);
        case(c, "absent", date, None, no(F::MissingClaim));
    }
    case(
        c,
        "in the past",
        "exp",
        Some(json!(now - 3600)),
        no(F::Expired),
    );
    case(c, "zero", "exp", Some(json!(0)), no(F::Expired));
    case(
        c,
        "at year 9999 (control)",
        "exp",
        Some(json!(MAX_NUMERIC_DATE)),
        Verdict::Valid,
    );
    case(
        c,
        "in an hour",
        "nbf",
        Some(json!(now + 3600)),
        no(F::NotYetValid),
    );
    case(
        c,
        "at year 9999",
        "nbf",
        Some(json!(MAX_NUMERIC_DATE)),
        no(F::NotYetValid),
    );
    case(c, "zero (control)", "nbf", Some(json!(0)), Verdict::Valid);
    case(
        c,
        "in an hour",
        "iat",
        Some(json!(now + 3600)),
        no(F::NotYetValid),
    );

    for (name, v, verdict) in [
        ("wrong", json!("https://evil.example"), no(F::WrongIssuer)),
        (
            "with a trailing slash",
            json!(format!("{ISSUER}/")),
            no(F::WrongIssuer),
        ),
        (
            "in upper case",
            json!(ISSUER.to_uppercase()),
            no(F::WrongIssuer),
        ),
        ("empty", json!(""), no(F::WrongIssuer)),
        ("an array of ours", json!([ISSUER]), invalid),
        ("a number", json!(1), invalid),
        ("null", json!(null), invalid),
    ] {
        case(c, name, "iss", Some(v), verdict);
    }
    case(c, "absent", "iss", None, no(F::MissingClaim));

    for (name, v, verdict) in [
        ("wrong", json!("billing-api"), no(F::WrongAudience)),
        ("empty", json!(""), no(F::WrongAudience)),
        (
            "with a space",
            json!(format!("{AUDIENCE} ")),
            no(F::WrongAudience),
        ),
        ("an empty array", json!([]), no(F::WrongAudience)),
        (
            "an array without ours",
            json!(["billing-api", "x"]),
            no(F::WrongAudience),
        ),
        (
            "an array with ours (control)",
            json!(["billing-api", AUDIENCE]),
            Verdict::Valid,
        ),
        ("an array with a number", json!([1, AUDIENCE]), invalid),
        ("a nested array", json!([[AUDIENCE]]), invalid),
        ("a number", json!(1), invalid),
        ("an object", json!({"aud": AUDIENCE}), invalid),
        ("null", json!(null), invalid),
    ] {
        case(c, name, "aud", Some(v), verdict);
    }
    case(c, "absent", "aud", None, no(F::MissingClaim));

    for claim in ["sub", "jti"] {
        case(c, "a number", claim, Some(json!(1)), invalid);
        case(c, "empty", claim, Some(json!("")), invalid);
        case(c, "null", claim, Some(json!(null)), invalid);
        case(c, "absent", claim, None, no(F::MissingClaim));
    }
    case(
        c,
        "as a string",
        "ver",
        Some(json!(k.ver.to_string())),
        invalid,
    );
    case(c, "negative", "ver", Some(json!(-1)), invalid);
    case(c, "a fraction", "ver", Some(json!(0.5)), invalid);
    case(c, "absent", "ver", None, no(F::MissingClaim));
    case(c, "a number", "sid", Some(json!(7)), invalid);
    case(c, "empty", "sid", Some(json!("")), invalid);
    case(c, "a number", "scope", Some(json!(1)), invalid);
    case(c, "an array", "client_id", Some(json!(["c"])), invalid);
    revocation(k, c);
}

/// `ver` behind the subject's version, `sid` of a revoked family, a revoked
/// `jti`: signed with the real key, refused by step 5.
fn revocation(k: &Kit, c: &mut Cases) {
    let es = k.es();
    let forged = |sub: &str, ver: u64, sid: Option<&str>, jti: Option<&str>| {
        let mut p = k.claims();
        p["sub"] = json!(sub);
        p["ver"] = json!(ver);
        if let Some(sid) = sid {
            p["sid"] = json!(sid);
        }
        if let Some(jti) = jti {
            p["jti"] = json!(jti);
        }
        k.sign(es, &k.header(es), &p)
    };
    let (s, v) = (k.revoked_subject.as_str(), k.revoked_subject_ver);
    assert!(v > 0, "the subject was revoked");
    c.add(
        "ver behind the subject's, forged",
        forged(s, v - 1, None, None),
        no(F::Revoked),
    );
    c.add(
        "ver 0 of a revoked subject",
        forged(s, 0, None, None),
        no(F::Revoked),
    );
    c.add(
        "a real token minted before its subject's revocation",
        k.before_subject_revocation.clone(),
        no(F::Revoked),
    );
    c.add(
        "ver at the subject's (control)",
        forged(s, v, None, None),
        Verdict::Valid,
    );
    c.add(
        "ver ahead of the subject's (control)",
        forged(s, v + 1, None, None),
        Verdict::Valid,
    );
    c.add(
        "sid of a revoked family, forged",
        forged(SUBJECT, k.ver, Some(&k.revoked_family), None),
        no(F::Revoked),
    );
    c.add(
        "a real token of a revoked family",
        k.family_token.clone(),
        no(F::Revoked),
    );
    c.add(
        "sid of a live family (control)",
        forged(SUBJECT, k.ver, Some("adv-live-family"), None),
        Verdict::Valid,
    );
    c.add(
        "jti of a revoked token, forged",
        forged(SUBJECT, k.ver, None, Some(&k.revoked_jti)),
        no(F::Revoked),
    );
}
