//! Cases about names: hostile `kid`s, and duplicate member names in the
//! header and the payload.

use super::forge::Kit;
use super::{Cases, Verdict, no};
use serde_json::json;
use tessera_proto::v1::VerifyFailure as F;

/// `kid`: missing, unknown, hostile, of the wrong type.
pub fn kid(k: &Kit, c: &mut Cases) {
    c.group("kid");
    let es = k.es();
    let p = k.claims();
    let real = es.kid();
    let mut upper = real.to_uppercase();
    if upper == real {
        upper = format!("X{real}");
    }
    let long = |n: usize| json!("k".repeat(n));
    for (name, kid) in [
        ("missing", None),
        ("unknown", Some(json!("no-such-key"))),
        ("path traversal", Some(json!("../../etc/passwd"))),
        ("absolute path", Some(json!("/dev/random"))),
        (
            "URL-encoded traversal",
            Some(json!("..%2f..%2fetc%2fpasswd")),
        ),
        ("SQL-shaped", Some(json!("' OR 1=1 --"))),
        (
            "SQL statement",
            Some(json!("x'; DROP TABLE signing_keys; --")),
        ),
        ("glob", Some(json!("*"))),
        ("5 000 characters", Some(long(5_000))),
        ("null", Some(json!(null))),
        ("number", Some(json!(1))),
        ("array of ours", Some(json!([real]))),
        ("object", Some(json!({"kid": real}))),
        ("empty", Some(json!(""))),
        ("ours with a space", Some(json!(format!("{real} ")))),
        ("ours in upper case", Some(json!(upper))),
        ("ours with NUL", Some(json!(format!("{real}\u{0}")))),
        (
            "ours with a zero-width space",
            Some(json!(format!("{real}\u{200B}"))),
        ),
    ] {
        let mut h = k.header(es);
        match kid {
            Some(v) => h["kid"] = v,
            None => {
                h.as_object_mut().unwrap().remove("kid");
            }
        }
        c.add(format!("kid {name}"), k.sign(es, &h, &p), no(F::UnknownKey));
    }
    // Larger than the 8 KiB a token may be: refused as a request.
    let mut h = k.header(es);
    h["kid"] = long(10_000);
    c.add(
        "kid 10 000 characters",
        k.sign(es, &h, &p),
        Verdict::Refused,
    );
}

/// Duplicate member names, in the header and in the payload.
pub fn duplicates(k: &Kit, c: &mut Cases) {
    c.group("duplicate");
    let es = k.es();
    let kid = es.kid();
    let claims = k.claims().to_string();
    let header = k.header(es).to_string();
    for (name, h) in [
        (
            "header alg twice, none last",
            format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"at+jwt","alg":"none"}}"#),
        ),
        (
            "header alg twice, none first",
            format!(r#"{{"alg":"none","alg":"ES256","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "header kid twice",
            format!(r#"{{"alg":"ES256","kid":"nope","kid":"{kid}","typ":"at+jwt"}}"#),
        ),
        (
            "header typ twice",
            format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"JWT","typ":"at+jwt"}}"#),
        ),
        (
            "header kid twice, escaped",
            format!(r#"{{"alg":"ES256","kid":"{kid}","k\u0069d":"{kid}","typ":"at+jwt"}}"#),
        ),
    ] {
        c.add(
            name,
            k.sign_text(es, h.as_bytes(), claims.as_bytes()),
            no(F::Malformed),
        );
    }
    let body = claims.trim_start_matches('{');
    for (name, first) in [
        ("payload sub twice", r#""sub":"admin","#.to_owned()),
        (
            "payload sub twice, escaped",
            r#""s\u0075b":"admin","#.to_owned(),
        ),
        ("payload exp twice", r#""exp":9999999999,"#.to_owned()),
        ("payload aud twice", r#""aud":"billing-api","#.to_owned()),
        (
            "payload iss twice",
            r#""iss":"https://evil.example","#.to_owned(),
        ),
        ("payload jti twice", r#""jti":"j","#.to_owned()),
        ("payload ver twice", r#""ver":0,"#.to_owned()),
        (
            "payload extra claim twice",
            r#""tenant":"a","tenant":"b","#.to_owned(),
        ),
    ] {
        let p = format!("{{{first}{body}");
        c.add(
            name,
            k.sign_text(es, header.as_bytes(), p.as_bytes()),
            no(F::Malformed),
        );
    }
    // Names differ by case: not duplicates, `Sub` is just an extra claim.
    let p = format!(r#"{{"Sub":"admin",{body}"#);
    c.add(
        "payload sub and Sub (control)",
        k.sign_text(es, header.as_bytes(), p.as_bytes()),
        Verdict::Valid,
    );
}
