//! The rules behind the adversarial suite (tests/e2e/adversarial.rs), one
//! level down: only the header parameters we mint, unique member names in
//! the payload too, and typed claims (absent vs present-but-wrong).

use super::tests::{Fx, NOW, claims, forge, fx, run};
use super::*;
use crate::b64url_encode;
use serde_json::json;

fn header() -> Value {
    json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"})
}

fn payload(f: &Fx) -> Value {
    serde_json::to_value(claims(&f.policy)).unwrap()
}

/// A token of raw JSON texts (to write what `json!` cannot: duplicate
/// names, `1.0`, exponents), signed by the fixture key.
fn forge_raw(f: &Fx, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64url_encode(header), b64url_encode(payload));
    let sig = f.key.sign_raw(input.as_bytes()).unwrap();
    format!("{input}.{}", b64url_encode(sig))
}

#[test]
fn any_header_parameter_we_never_mint_is_refused_whatever_its_value() {
    let f = fx();
    let p = payload(&f);
    assert_eq!(run(&f, &forge(&f, &header(), &p), NOW).map(|_| ()), Ok(()));
    for (name, value) in [
        ("jku", json!("https://evil.example/jwks.json")),
        ("jwk", json!({"kty": "EC"})),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!([])),
        ("x5t", json!("AAAA")),
        ("x5t#S256", json!("AAAA")),
        ("crit", json!([])),
        ("crit", json!(["b64"])),
        ("b64", json!(false)),
        ("b64", json!(true)),
        ("zip", json!("DEF")),
        ("cty", json!("JWT")),
        ("foo", json!(null)),
        ("epk", json!({})),
        ("p2s", json!("")),
        ("enc", json!("A128GCM")),
        ("Alg", json!("ES256")),
        ("", json!(0)),
    ] {
        let mut h = header();
        h[name] = value;
        assert_eq!(
            run(&f, &forge(&f, &h, &p), NOW),
            Err(Failure::UnsupportedHeader),
            "{name}"
        );
    }
    // `alg` is judged first: an unsigned token is refused for what it is.
    let h = json!({"alg": "none", "kid": "k1", "typ": "at+jwt", "jku": "x"});
    assert_eq!(
        run(&f, &forge(&f, &h, &p), NOW),
        Err(Failure::AlgorithmNotAllowed)
    );
}

#[test]
fn a_claim_present_with_the_wrong_type_says_so() {
    let f = fx();
    let cases = [
        ("iss", json!(["http://127.0.0.1:50051"])),
        ("iss", json!(1)),
        ("sub", json!(7)),
        ("sub", json!("")),
        ("aud", json!(1)),
        ("aud", json!(null)),
        ("aud", json!([["api"]])),
        ("aud", json!(["api", 1])),
        ("exp", json!("1700000600")),
        ("exp", json!(null)),
        ("exp", json!(true)),
        ("exp", json!([NOW + 600])),
        ("nbf", json!("0")),
        ("iat", json!({})),
        ("jti", json!(1)),
        ("jti", json!("")),
        ("ver", json!("3")),
        ("ver", json!(-1)),
        ("ver", json!(3.5)),
        ("sid", json!(1)),
        ("sid", json!(null)),
        ("sid", json!("")),
        ("scope", json!(["a"])),
        ("client_id", json!(false)),
    ];
    for (name, value) in cases {
        let mut p = payload(&f);
        p[name] = value.clone();
        assert_eq!(
            run(&f, &forge(&f, &header(), &p), NOW),
            Err(Failure::InvalidClaim),
            "{name}: {value}"
        );
    }
    for name in ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "ver"] {
        let mut p = payload(&f);
        p.as_object_mut().unwrap().remove(name);
        assert_eq!(
            run(&f, &forge(&f, &header(), &p), NOW),
            Err(Failure::MissingClaim),
            "{name}"
        );
    }
    // The optional ones may be absent.
    let mut p = payload(&f);
    for name in ["sid", "scope", "client_id"] {
        p.as_object_mut().unwrap().remove(name);
    }
    assert!(run(&f, &forge(&f, &header(), &p), NOW).is_ok());
}

#[test]
fn numeric_dates_are_whole_seconds_from_1970_to_9999() {
    let f = fx();
    let h = header().to_string();
    let good = payload(&f).to_string();
    let with = |name: &str, text: &str| {
        let v = payload(&f)[name].to_string();
        let p = good.replacen(&format!("\"{name}\":{v}"), &format!("\"{name}\":{text}"), 1);
        assert_ne!(p, good, "{name} not replaced");
        run(&f, &forge_raw(&f, &h, &p), NOW)
    };
    let exp = NOW + 600;
    // The same instant, written three ways RFC 7519 allows and we do not.
    for text in [
        format!("{exp}.0"),
        format!("{exp}.5"),
        "1.7000006e9".to_owned(),
    ] {
        assert_eq!(with("exp", &text), Err(Failure::InvalidClaim), "{text}");
        assert_eq!(with("nbf", &text), Err(Failure::InvalidClaim), "{text}");
        assert_eq!(with("iat", &text), Err(Failure::InvalidClaim), "{text}");
    }
    for text in ["-1", "1e30", "18446744073709551615", "9223372036854775807"] {
        assert_eq!(with("exp", text), Err(Failure::InvalidClaim), "{text}");
        assert_eq!(with("nbf", text), Err(Failure::InvalidClaim), "{text}");
    }
    // The bounds themselves are dates.
    assert!(with("exp", &MAX_NUMERIC_DATE.to_string()).is_ok());
    assert_eq!(
        with("exp", &(MAX_NUMERIC_DATE + 1).to_string()),
        Err(Failure::InvalidClaim)
    );
    assert!(with("nbf", "0").is_ok());
    assert!(with("iat", "0").is_ok());
    assert_eq!(
        with("nbf", &MAX_NUMERIC_DATE.to_string()),
        Err(Failure::NotYetValid)
    );
    assert_eq!(with("exp", "0"), Err(Failure::Expired));
}

#[test]
fn duplicate_names_are_malformed_in_the_payload_too() {
    let f = fx();
    let h = header().to_string();
    let good = payload(&f).to_string();
    assert!(run(&f, &forge_raw(&f, &h, &good), NOW).is_ok());
    let body = good.trim_start_matches('{');
    for dup in [
        r#""sub":"mallory","#,
        r#""s\u0075b":"mallory","#,
        r#""exp":9999999999,"#,
        r#""tenant":"a","tenant":"b","#,
    ] {
        let p = format!("{{{dup}{body}");
        assert_eq!(
            run(&f, &forge_raw(&f, &h, &p), NOW),
            Err(Failure::Malformed),
            "{dup}"
        );
    }
    let dup_header = r#"{"alg":"ES256","kid":"k1","typ":"at+jwt","k\u0069d":"k2"}"#;
    assert_eq!(
        run(&f, &forge_raw(&f, dup_header, &good), NOW),
        Err(Failure::Malformed)
    );
}

#[test]
fn unknown_claims_are_kept_not_refused() {
    // Extra claims are the caller's (allow-listed at Issue); Verify returns
    // them as they are.
    let f = fx();
    let mut p = payload(&f);
    p["tenant"] = json!({"id": 1});
    let c = run(&f, &forge(&f, &header(), &p), NOW).unwrap();
    assert_eq!(c.extra["tenant"], json!({"id": 1}));
}
