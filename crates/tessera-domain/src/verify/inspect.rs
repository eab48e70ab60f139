//! Reading a token without trusting it, for an operator's `tessera token
//! inspect`: Verify's own parsers (strict JSON objects, the header
//! allow-list, the claims' types, time with skew), run without a key. No
//! signature is checked here, so nothing this returns says a token is
//! genuine; it says what Verify would refuse before even asking for keys.
//!
//! Unlike Verify (first failure wins, one answer), inspection goes on past
//! a failure and lists every finding, in pipeline order: an operator fixing
//! an integration wants to see all of them at once.

use super::Failure;
use super::parse::{self, MINTED_HEADERS, strict_object};
use crate::b64url_decode;
use crate::claims::{Claims, REGISTERED_CLAIMS};
use crate::clock::UnixTime;
use crate::keys::Algorithm;
use crate::kind::TokenKind;
use crate::policy::{MAX_TOKEN_BYTES, Policy};
use serde_json::Value;

/// The claims every token must carry (`sid`, `scope`, `client_id` may be
/// absent).
const REQUIRED: [&str; 8] = ["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "ver"];

/// What Verify would refuse, and why in a few words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Verify's answer for it.
    pub failure: Failure,
    /// Which part of the token, in plain words (never a token).
    pub detail: String,
}

/// A token read without a key.
#[derive(Debug, Clone, Default)]
pub struct Inspection {
    /// The header's members in token order (empty when unreadable).
    pub header: Vec<(String, Value)>,
    /// The payload's members in token order (empty when unreadable).
    pub payload: Vec<(String, Value)>,
    /// The typed claims, when every claim has its registered type.
    pub claims: Option<Claims>,
    /// The kind its `typ` names.
    pub kind: Option<TokenKind>,
    /// Length of the decoded signature, when it is base64url.
    pub signature_bytes: Option<usize>,
    /// What Verify would refuse, in pipeline order; empty when nothing.
    pub findings: Vec<Finding>,
}

/// What the reader expects, where it knows: the issuer the server accepts,
/// the audience and kind a caller would ask for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expect<'a> {
    /// The server's `iss`.
    pub issuer: Option<&'a str>,
    /// The audience a caller would pass to Verify.
    pub audience: Option<&'a str>,
    /// The kind a caller would pass to Verify.
    pub kind: Option<TokenKind>,
}

impl Inspection {
    fn found(&mut self, failure: Failure, detail: impl Into<String>) {
        self.findings.push(Finding {
            failure,
            detail: detail.into(),
        });
    }
}

/// Reads `token` as Verify would, without a key, at `now`.
pub fn inspect(token: &str, policy: &Policy, expect: &Expect<'_>, now: UnixTime) -> Inspection {
    let mut out = Inspection::default();
    if token.len() > MAX_TOKEN_BYTES {
        out.found(
            Failure::Malformed,
            format!("larger than {MAX_TOKEN_BYTES} bytes"),
        );
    }
    let parts: Vec<&str> = token.split('.').collect();
    let [h64, p64, s64] = parts[..] else {
        out.found(
            Failure::Malformed,
            format!("{} dot-separated parts, not 3 (JWS compact)", parts.len()),
        );
        return out;
    };
    match b64url_decode(h64).map(|h| strict_object(&h)) {
        Some(Ok(h)) => out.header = h.0,
        _ => out.found(
            Failure::Malformed,
            "the header is not base64url of a JSON object with unique names",
        ),
    }
    match b64url_decode(p64).map(|p| strict_object(&p)) {
        Some(Ok(p)) => out.payload = p.0,
        _ => out.found(
            Failure::Malformed,
            "the payload is not base64url of a JSON object with unique names",
        ),
    }
    out.signature_bytes = (!s64.is_empty())
        .then(|| b64url_decode(s64).map(|s| s.len()))
        .flatten();
    header(&mut out, policy, expect);
    if out.signature_bytes.is_none() {
        out.found(
            Failure::Malformed,
            "the signature is empty or not base64url",
        );
    }
    if !out.payload.is_empty() {
        claims(&mut out, policy, expect, now);
    }
    out
}

/// Step 2, without the key lookup.
fn header(out: &mut Inspection, policy: &Policy, expect: &Expect<'_>) {
    if out.header.is_empty() {
        return;
    }
    // Read from a moved-out copy while findings are added; put back below.
    let members = std::mem::take(&mut out.header);
    let get = |name: &str| members.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let alg = get("alg").and_then(Value::as_str);
    match alg.and_then(Algorithm::from_name) {
        Some(a) if policy.allowed_algorithms.contains(&a) => {}
        _ => {
            let what = alg.map_or("missing".to_owned(), |a| format!("{a:?}"));
            out.found(
                Failure::AlgorithmNotAllowed,
                format!("alg {what} is not one Verify accepts (ES256, EdDSA, RS256, PS256)"),
            );
        }
    }
    let unsupported: Vec<&str> = members
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !MINTED_HEADERS.contains(k))
        .collect();
    if !unsupported.is_empty() {
        out.found(
            Failure::UnsupportedHeader,
            format!(
                "header parameter(s) Tessera never mints: {}",
                unsupported.join(", ")
            ),
        );
    }
    if get("kid").and_then(Value::as_str).is_none() {
        out.found(Failure::UnknownKey, "no kid (string) names the signing key");
    }
    let typ = get("typ").and_then(Value::as_str);
    out.kind = typ.and_then(TokenKind::from_typ);
    match (out.kind, expect.kind) {
        (None, _) => out.found(
            Failure::WrongTokenKind,
            format!(
                "typ {} is not a kind Tessera mints",
                typ.map_or("missing".to_owned(), |t| format!("{t:?}"))
            ),
        ),
        (Some(k), Some(want)) if k != want => out.found(
            Failure::WrongTokenKind,
            format!("typ {:?}, not the expected {:?}", k.typ(), want.typ()),
        ),
        _ => {}
    }
    out.header = members;
}

/// The claims' types, then step 4.
fn claims(out: &mut Inspection, policy: &Policy, expect: &Expect<'_>, now: UnixTime) {
    for (failure, detail) in claim_types(&out.payload) {
        out.found(failure, detail);
    }
    let Ok(c) = parse::claims_of(out.payload.clone()) else {
        return;
    };
    claim_values(out, &c, policy, expect, now);
    out.claims = Some(c);
}

/// Every registered claim that is required and missing, or present with
/// the wrong type, in the order of [`REGISTERED_CLAIMS`].
fn claim_types(payload: &[(String, Value)]) -> Vec<(Failure, String)> {
    let get = |name: &str| {
        payload
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut bad = Vec::new();
    for name in REGISTERED_CLAIMS {
        let Some(v) = get(name) else {
            if REQUIRED.contains(&name) {
                bad.push((Failure::MissingClaim, format!("{name} is missing")));
            }
            continue;
        };
        let ok = match name {
            "sub" | "jti" | "sid" => parse::identifier(v).is_ok(),
            "aud" => parse::audience(v).is_ok(),
            "exp" | "nbf" | "iat" => parse::numeric_date(&v).is_ok(),
            "ver" => v.as_u64().is_some(),
            _ => parse::text(v).is_ok(),
        };
        if !ok {
            bad.push((
                Failure::InvalidClaim,
                format!("{name} {}", expected_type(name)),
            ));
        }
    }
    bad
}

/// Step 4 on well-typed claims: time with the skew, then the issuer and
/// audience the reader expects.
fn claim_values(
    out: &mut Inspection,
    c: &Claims,
    policy: &Policy,
    expect: &Expect<'_>,
    now: UnixTime,
) {
    let skew = policy.clock_skew;
    if now >= c.exp.saturating_add(skew) {
        out.found(
            Failure::Expired,
            format!("exp is past (beyond the {skew} s skew)"),
        );
    }
    if now.saturating_add(skew) < c.nbf {
        out.found(
            Failure::NotYetValid,
            format!("nbf is ahead (beyond the {skew} s skew)"),
        );
    }
    if c.iat > now.saturating_add(skew) {
        out.found(
            Failure::NotYetValid,
            format!("iat is ahead (beyond the {skew} s skew)"),
        );
    }
    if let Some(iss) = expect.issuer.filter(|i| *i != c.iss) {
        out.found(Failure::WrongIssuer, format!("iss is not {iss:?}"));
    }
    if let Some(aud) = expect.audience.filter(|a| !c.aud.contains(a)) {
        out.found(Failure::WrongAudience, format!("aud does not name {aud:?}"));
    }
}

fn expected_type(name: &str) -> &'static str {
    match name {
        "sub" | "jti" | "sid" => "must be a non-empty string",
        "aud" => "must be a string or an array of strings",
        "exp" | "nbf" | "iat" => "must be an integer from 0 to 253402300799 (whole seconds)",
        "ver" => "must be a non-negative integer",
        _ => "must be a string",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::b64url_encode;

    fn token(header: &str, payload: &str) -> String {
        format!(
            "{}.{}.{}",
            b64url_encode(header.as_bytes()),
            b64url_encode(payload.as_bytes()),
            b64url_encode([7; 64])
        )
    }

    const NOW: i64 = 1_700_000_000;

    fn payload(exp: i64) -> String {
        format!(
            r#"{{"iss":"https://t","sub":"u","aud":"api","exp":{exp},"nbf":{n},"iat":{n},"jti":"j","ver":0,"sid":"f"}}"#,
            n = NOW - 60
        )
    }

    fn failures(i: &Inspection) -> Vec<Failure> {
        i.findings.iter().map(|f| f.failure).collect()
    }

    #[test]
    fn a_well_formed_live_token_has_no_findings() {
        let t = token(
            r#"{"alg":"ES256","kid":"k1","typ":"at+jwt"}"#,
            &payload(NOW + 600),
        );
        let expect = Expect {
            issuer: Some("https://t"),
            audience: Some("api"),
            kind: Some(TokenKind::Access),
        };
        let i = inspect(&t, &Policy::default(), &expect, NOW);
        assert_eq!(i.findings, vec![]);
        assert_eq!(i.kind, Some(TokenKind::Access));
        assert_eq!(i.signature_bytes, Some(64));
        assert_eq!(i.claims.unwrap().sid.as_deref(), Some("f"));
    }

    #[test]
    fn every_finding_is_listed_in_pipeline_order() {
        let t = token(
            r#"{"alg":"HS256","jku":"https://x","typ":"jwt"}"#,
            r#"{"iss":"https://t","sub":"","aud":7,"exp":"soon","nbf":1,"iat":1,"ver":0}"#,
        );
        let i = inspect(&t, &Policy::default(), &Expect::default(), NOW);
        assert_eq!(
            failures(&i),
            vec![
                Failure::AlgorithmNotAllowed,
                Failure::UnsupportedHeader,
                Failure::UnknownKey,
                Failure::WrongTokenKind,
                Failure::InvalidClaim,
                Failure::InvalidClaim,
                Failure::InvalidClaim,
                Failure::MissingClaim,
            ]
        );
        assert!(i.findings[1].detail.contains("jku"));
        assert_eq!(i.findings[7].detail, "jti is missing");
        assert!(i.claims.is_none());
    }

    #[test]
    fn time_is_judged_with_the_skew_and_expectations_are_compared() {
        let t = token(
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt"}"#,
            &payload(NOW - 31),
        );
        let expect = Expect {
            issuer: Some("https://other"),
            audience: Some("billing"),
            kind: Some(TokenKind::PasswordReset),
        };
        let i = inspect(&t, &Policy::default(), &expect, NOW);
        assert_eq!(
            failures(&i),
            vec![
                Failure::WrongTokenKind,
                Failure::Expired,
                Failure::WrongIssuer,
                Failure::WrongAudience,
            ]
        );
        // Within the skew it is not expired yet.
        let t = token(
            r#"{"alg":"EdDSA","kid":"k","typ":"at+jwt"}"#,
            &payload(NOW - 29),
        );
        assert_eq!(
            failures(&inspect(&t, &Policy::default(), &Expect::default(), NOW)),
            vec![]
        );
    }

    #[test]
    fn shapes_that_cannot_be_read() {
        for (t, why) in [
            ("a.b", "2 dot-separated parts"),
            ("a.b.c.d", "4 dot-separated parts"),
            ("!!.e30.AA", "the header is not"),
        ] {
            let i = inspect(t, &Policy::default(), &Expect::default(), NOW);
            assert_eq!(i.findings[0].failure, Failure::Malformed, "{t}");
            assert!(i.findings[0].detail.contains(why), "{t}: {:?}", i.findings);
        }
        let dup = token(r#"{"alg":"ES256","alg":"none"}"#, &payload(NOW + 60));
        let i = inspect(&dup, &Policy::default(), &Expect::default(), NOW);
        assert_eq!(i.findings[0].failure, Failure::Malformed);
        let unsigned = format!("{}.", &dup[..dup.rfind('.').unwrap()]);
        let i = inspect(&unsigned, &Policy::default(), &Expect::default(), NOW);
        assert!(
            i.findings
                .iter()
                .any(|f| f.detail.contains("signature is empty"))
        );
    }
}
