//! Cases about the token's shape (parts, base64url, whitespace, size,
//! UTF-8, JSON types), and the discovery document's `jwks_uri` under a
//! hostile `Host`.

use super::forge::{Kit, enc, sign_parts};
use super::{Cases, Verdict, no};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE};
use serde_json::json;
use tessera_domain::b64url_encode;
use tessera_proto::v1::VerifyFailure as F;

pub fn structure(k: &Kit, c: &mut Cases) {
    c.group("structure");
    let es = k.es();
    let good = k.valid(es);
    let mut parts = good.split('.');
    let (h, p, s) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let m = no(F::Malformed);
    for (name, token) in [
        ("1 part, not base64", "abc".to_owned()),
        ("1 part, the header", h.clone()),
        ("2 parts", format!("{h}.{p}")),
        ("4 parts", format!("{good}.{s}")),
        ("4 parts, the last empty", format!("{good}.")),
        ("5 parts (JWE shape)", format!("{h}.{s}.{s}.{p}.{s}")),
        ("only dots", "..".to_owned()),
        ("three dots", "...".to_owned()),
        ("empty header", format!(".{p}.{s}")),
        ("empty payload", format!("{h}..{s}")),
        ("empty signature", format!("{h}.{p}.")),
        ("signature with padding", format!("{good}==")),
        ("leading space", format!(" {good}")),
        ("trailing space", format!("{good} ")),
        ("trailing newline", format!("{good}\n")),
        ("CRLF around", format!("\r\n{good}\r\n")),
        ("space after a dot", format!("{h}. {p}.{s}")),
        (
            "tab inside the payload",
            format!("{h}.{}\t{}.{s}", &p[..8], &p[8..]),
        ),
        (
            "newline inside the signature",
            format!("{h}.{p}.{}\n{}", &s[..8], &s[8..]),
        ),
        (
            "non-ASCII inside the header",
            format!("{}é{}.{p}.{s}", &h[..4], &h[4..]),
        ),
        ("Bearer prefix", format!("Bearer {good}")),
    ] {
        c.add(name, token, m);
    }
    // Payload and header swapped: two objects, so the claims are read as a
    // header, which has no `alg`.
    c.add(
        "header and payload swapped",
        format!("{p}.{h}.{s}"),
        no(F::AlgorithmNotAllowed),
    );
    // Well signed, but each with one defect of encoding only.
    let mut header_text = k.header(es).to_string();
    while header_text.len().is_multiple_of(3) {
        header_text.push(' '); // trailing JSON whitespace: forces padding
    }
    let padded = URL_SAFE.encode(&header_text);
    assert!(padded.ends_with('='));
    c.add(
        "header with base64 padding, signed",
        sign_parts(es, &padded, &p),
        m,
    );
    let mut claims = k.claims();
    claims["tenant"] = json!(">>>???>>>???>>>???");
    let payload_text = claims.to_string();
    let standard = STANDARD_NO_PAD.encode(&payload_text);
    assert!(standard.contains(['+', '/']), "{standard}");
    c.add(
        "payload in standard base64, signed",
        sign_parts(es, &h, &standard),
        m,
    );
    // A signature in standard base64: sign until it has a `-` or `_`.
    let (input, sig) = loop {
        let t = k.valid(es);
        let (input, sig) = t.rsplit_once('.').unwrap();
        if sig.contains(['-', '_']) {
            break (input.to_owned(), sig.replace('-', "+").replace('_', "/"));
        }
    };
    c.add("signature in standard base64", format!("{input}.{sig}"), m);

    // Size: exactly the limit verifies; one byte more is a bad request.
    let exact = sized(k, 8 * 1024);
    assert_eq!(exact.len(), 8 * 1024);
    c.add("exactly 8 KiB (control)", exact, Verdict::Valid);
    c.add(
        "8 KiB and 1 byte",
        format!("{}A", sized(k, 8 * 1024)),
        Verdict::Refused,
    );
    c.add(
        "1 MB",
        format!("{h}.{}.{s}", "A".repeat(1 << 20)),
        Verdict::TooLarge,
    );

    // Bytes that are not UTF-8, JSON that is not an object.
    let kid = es.kid();
    let utf8_header = format!(r#"{{"alg":"ES256","kid":"{kid}","typ":"at+jwt","x":"#);
    let bad_header = [utf8_header.as_bytes(), b"\"\xff\xfe\"}"].concat();
    c.add(
        "invalid UTF-8 in the header",
        k.sign_text(es, &bad_header, p_text(k).as_bytes()),
        m,
    );
    let bad_payload = [
        &p_text(k).as_bytes()[..p_text(k).len() - 1],
        b",\"x\":\"\xc3\x28\"}",
    ]
    .concat();
    c.add(
        "invalid UTF-8 in the payload",
        k.sign_text(es, k.header(es).to_string().as_bytes(), &bad_payload),
        m,
    );
    let hdr = k.header(es).to_string();
    for (name, text) in [
        ("an array", "[1]"),
        ("a string", "\"at+jwt\""),
        ("a number", "1"),
        ("null", "null"),
        ("true", "true"),
        ("not JSON", "alg=ES256"),
        ("an object with trailing bytes", &format!("{hdr}x")),
        ("an object after a BOM", &format!("\u{feff}{hdr}")),
        (
            "nested 200 deep",
            &format!(
                r#"{{"alg":"ES256","kid":"{kid}","x":{}1{}}}"#,
                "[".repeat(200),
                "]".repeat(200)
            ),
        ),
    ] {
        c.add(
            format!("header {name}"),
            k.sign_text(es, text.as_bytes(), p_text(k).as_bytes()),
            m,
        );
    }
    let claims = p_text(k);
    for (name, text) in [
        ("an array", format!("[{claims}]")),
        ("a string", "\"sub\"".to_owned()),
        ("a number", "1".to_owned()),
        ("null", "null".to_owned()),
        ("an object with trailing bytes", format!("{claims}x")),
        (
            "an object with a trailing comma",
            format!("{},}}", &claims[..claims.len() - 1]),
        ),
        ("an object after a BOM", format!("\u{feff}{claims}")),
        (
            "nested 200 deep",
            format!(
                "{},\"x\":{}1{}}}",
                &claims[..claims.len() - 1],
                "[".repeat(200),
                "]".repeat(200)
            ),
        ),
    ] {
        c.add(
            format!("payload {name}"),
            k.sign_text(es, hdr.as_bytes(), text.as_bytes()),
            m,
        );
    }
}

fn p_text(k: &Kit) -> String {
    k.claims().to_string()
}

/// A valid token of exactly `len` bytes: an extra claim pads it, and
/// trailing JSON whitespace in the header reaches the lengths that base64
/// of the payload alone skips.
fn sized(k: &Kit, len: usize) -> String {
    let es = k.es();
    for spaces in 0..3 {
        let h64 = b64url_encode(format!("{}{}", k.header(es), " ".repeat(spaces)));
        let mut claims = k.claims();
        claims["tenant"] = json!("");
        let base = sign_parts(es, &h64, &enc(&claims)).len();
        // 3 bytes of claim text are 4 characters of base64url: start just
        // below the estimate.
        let start = len.saturating_sub(base) * 3 / 4;
        for pad in start.saturating_sub(4)..len {
            claims["tenant"] = json!("p".repeat(pad));
            let t = sign_parts(es, &h64, &enc(&claims));
            if t.len() >= len {
                if t.len() == len {
                    return t;
                }
                break;
            }
        }
    }
    panic!("no token of {len} bytes");
}

/// `GET /.well-known/openid-configuration` with a hostile `Host` (and
/// forwarded headers, and an absolute-form target): the document must name
/// the configured issuer's JWKS only.
pub fn discovery(c: &mut Cases) {
    c.group("discovery");
    let path = "/.well-known/openid-configuration";
    for (name, request) in [
        (
            "Host: evil.example",
            format!("GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"),
        ),
        (
            "X-Forwarded-Host and -Proto",
            format!(
                "GET {path} HTTP/1.1\r\nHost: evil.example\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: http\r\nForwarded: host=evil.example;proto=http\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "absolute-form target",
            format!(
                "GET http://evil.example{path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
            ),
        ),
        (
            "HTTP/1.0 without Host",
            format!("GET {path} HTTP/1.0\r\n\r\n"),
        ),
    ] {
        c.http(name, request);
    }
}
