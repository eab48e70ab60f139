//! Cases about the header and the signature: `alg` none, HMAC keyed with a
//! public key, algorithm switches, broken signatures, and header parameters
//! we never mint.

use super::forge::{
    Kit, ecdsa_der, enc, foreign_jwk, foreign_key, hmac, raw_public, sign_parts, spki_der, spki_pem,
};
use super::{Cases, Verdict, no};
use serde_json::{Value, json};
use tessera_domain::b64url_encode;
use tessera_domain::keys::Algorithm;
use tessera_proto::v1::VerifyFailure as F;

const ALGS: [Algorithm; 4] = [
    Algorithm::Es256,
    Algorithm::EdDsa,
    Algorithm::Rs256,
    Algorithm::Ps256,
];

/// `alg: none` in every spelling, and `alg` of every wrong JSON type.
pub fn alg(k: &Kit, c: &mut Cases) {
    c.group("alg");
    let es = k.es();
    let (input, sig) = k.es_parts();
    let p = enc(&k.claims());
    let with_alg = |alg: Option<Value>| {
        let mut h = k.header(es);
        match alg {
            Some(a) => h["alg"] = a,
            None => {
                h.as_object_mut().unwrap().remove("alg");
            }
        }
        enc(&h)
    };
    for spelling in ["none", "None", "NONE", "nOnE", ""] {
        let h = with_alg(Some(json!(spelling)));
        c.add(
            format!("alg {spelling:?}, no signature"),
            format!("{h}.{p}."),
            no(F::AlgorithmNotAllowed),
        );
        c.add(
            format!("alg {spelling:?}, our key's signature"),
            sign_parts(es, &h, &p),
            no(F::AlgorithmNotAllowed),
        );
    }
    for (name, alg) in [
        ("missing", None),
        ("null", Some(json!(null))),
        ("number", Some(json!(256))),
        ("array", Some(json!(["ES256"]))),
        ("object", Some(json!({"alg": "ES256"}))),
        ("true", Some(json!(true))),
        ("lower case es256", Some(json!("es256"))),
        ("with a space", Some(json!("ES256 "))),
        ("ES384", Some(json!("ES384"))),
        ("ES512", Some(json!("ES512"))),
        ("RS512", Some(json!("RS512"))),
        ("Ed25519", Some(json!("Ed25519"))),
    ] {
        let h = with_alg(alg);
        c.add(
            format!("alg {name}, our key's signature"),
            sign_parts(es, &h, &p),
            no(F::AlgorithmNotAllowed),
        );
    }
    // The original signature under a header that only lost its `alg`.
    let (h_orig, p_orig) = input.split_once('.').unwrap();
    let mut h: Value =
        serde_json::from_slice(&tessera_domain::b64url_decode(h_orig).unwrap()).unwrap();
    h["alg"] = json!("none");
    c.add(
        "alg none, the original signature",
        format!("{}.{p_orig}.{}", enc(&h), b64url_encode(&sig)),
        no(F::AlgorithmNotAllowed),
    );
}

/// HS256/384/512 keyed with each published public key in every encoding.
pub fn hmac_with_public_keys(k: &Kit, c: &mut Cases) {
    c.group("hmac");
    let p = enc(&k.claims());
    for alg in [Algorithm::Es256, Algorithm::EdDsa, Algorithm::Rs256] {
        let key = k.key(alg);
        let jwk = k.jwk(alg);
        let mut secrets: Vec<(String, Vec<u8>)> = vec![
            ("PEM with final newline".into(), spki_pem(jwk, true)),
            ("PEM without final newline".into(), spki_pem(jwk, false)),
            ("DER".into(), spki_der(jwk)),
            ("JWK JSON".into(), jwk.to_string().into_bytes()),
        ];
        secrets.extend(raw_public(jwk).into_iter().map(|(n, b)| (n.to_owned(), b)));
        // Every algorithm for the default key; HS256 for the others.
        let hs: &[&str] = if alg == Algorithm::Es256 {
            &["HS256", "HS384", "HS512"]
        } else {
            &["HS256"]
        };
        for h_alg in hs {
            let mut h = k.header(key);
            h["alg"] = json!(h_alg);
            for (what, secret) in &secrets {
                c.add(
                    format!("{h_alg} keyed with the {} key's {what}", alg.name()),
                    hmac(h_alg, &format!("{}.{p}", enc(&h)), secret),
                    no(F::AlgorithmNotAllowed),
                );
            }
        }
    }
    let mut h = k.header(k.es());
    h["alg"] = json!("HS256");
    c.add(
        "HS256 keyed with the whole JWKS document",
        hmac("HS256", &format!("{}.{p}", enc(&h)), k.jwks_json.as_bytes()),
        no(F::AlgorithmNotAllowed),
    );
}

/// `alg` switched across RS/PS/ES/EdDSA, with real and foreign keys.
pub fn algorithm_switches(k: &Kit, c: &mut Cases) {
    c.group("alg-switch");
    let p = k.claims();
    for a in ALGS {
        let key_a = k.key(a);
        c.add(
            format!("{} key, its own alg (control)", a.name()),
            k.valid(key_a),
            Verdict::Valid,
        );
        for b in ALGS.into_iter().filter(|b| *b != a) {
            let mut h = k.header(key_a);
            h["alg"] = json!(b.name());
            c.add(
                format!(
                    "{} kid, alg {}, signed by the {} key",
                    a.name(),
                    b.name(),
                    a.name()
                ),
                k.sign(key_a, &h, &p),
                no(F::AlgorithmNotAllowed),
            );
            c.add(
                format!(
                    "{} kid, alg {}, signed by the {} key",
                    a.name(),
                    b.name(),
                    b.name()
                ),
                k.sign(k.key(b), &h, &p),
                no(F::AlgorithmNotAllowed),
            );
        }
        // Keys the deployment never published.
        let own = foreign_key(a, "attacker");
        let mut h = k.header(&own);
        c.add(
            format!("foreign {} key, its own kid", a.name()),
            k.sign(&own, &h, &p),
            no(F::UnknownKey),
        );
        h["kid"] = json!(key_a.kid());
        c.add(
            format!("foreign {} key under our {} kid", a.name(), a.name()),
            k.sign(&own, &h, &p),
            no(F::BadSignature),
        );
    }
}

/// Broken signatures: CVE-2022-21449's zero ECDSA signature and its kin.
pub fn signatures(k: &Kit, c: &mut Cases) {
    c.group("signature");
    let (input, sig) = k.es_parts();
    let (r, s) = sig.split_at(32);
    // The order n of P-256: r = n is 0 mod n.
    let n = super::forge::hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551");
    let with = |bytes: &[u8]| format!("{input}.{}", b64url_encode(bytes));
    let zero = [0u8; 32];
    for (name, bytes) in [
        ("ES256 r = s = 0, raw 64 bytes", [zero, zero].concat()),
        ("ES256 r = s = 0, DER", ecdsa_der(&zero, &zero)),
        ("ES256 r = 0, real s", [&zero[..], s].concat()),
        ("ES256 real r, s = 0", [r, &zero[..]].concat()),
        ("ES256 r = s = n", [n.clone(), n.clone()].concat()),
        ("ES256 r = n, real s", [&n[..], s].concat()),
        ("ES256 all 0xFF", vec![0xff; 64]),
        ("ES256 truncated by one byte", sig[..63].to_vec()),
        ("ES256 truncated to r", r.to_vec()),
        ("ES256 one byte", vec![0]),
        ("ES256 one byte too long", [&sig[..], &[0]].concat()),
        ("ES256 twice", sig.repeat(2)),
        ("ES256 the real signature in DER", ecdsa_der(r, s)),
        ("ES256 s and r swapped", [s, r].concat()),
    ] {
        c.add(name, with(&bytes), no(F::BadSignature));
    }
    c.add(
        "ES256 empty signature",
        format!("{input}."),
        no(F::Malformed),
    );
    for (alg, len) in [
        (Algorithm::EdDsa, 64),
        (Algorithm::Rs256, 256),
        (Algorithm::Ps256, 256),
    ] {
        let key = k.key(alg);
        let t = k.valid(key);
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = tessera_domain::b64url_decode(sig).unwrap();
        let with = |bytes: &[u8]| format!("{input}.{}", b64url_encode(bytes));
        c.add(
            format!("{} zero signature", alg.name()),
            with(&vec![0; len]),
            no(F::BadSignature),
        );
        c.add(
            format!("{} all 0xFF", alg.name()),
            with(&vec![0xff; len]),
            no(F::BadSignature),
        );
        c.add(
            format!("{} truncated", alg.name()),
            with(&sig[..len - 1]),
            no(F::BadSignature),
        );
        c.add(
            format!("{} empty signature", alg.name()),
            format!("{input}."),
            no(F::Malformed),
        );
    }
}

/// Any header parameter Tessera never mints, whatever its value.
pub fn parameters(k: &Kit, c: &mut Cases) {
    c.group("header");
    let es = k.es();
    let p = k.claims();
    c.add(
        "exactly alg, kid, typ (control)",
        k.valid(es),
        Verdict::Valid,
    );
    let reordered = json!({"typ": "at+jwt", "kid": es.kid(), "alg": "ES256"});
    c.add(
        "alg, kid, typ in another order (control)",
        k.sign(es, &reordered, &p),
        Verdict::Valid,
    );
    for (name, value) in [
        ("jwk", foreign_jwk(Algorithm::Es256, "attacker")),
        ("jwk", k.jwk(Algorithm::Es256).clone()),
        ("jwk", json!(null)),
        ("jku", json!("https://evil.example/jwks.json")),
        ("jku", json!("")),
        ("x5u", json!("https://evil.example/cert.pem")),
        ("x5c", json!(["MIIBszCCAVmgAwIBAgIUQ"])),
        ("x5c", json!([])),
        ("x5t", json!("dGh1bWJwcmludA")),
        ("x5t#S256", json!("dGh1bWJwcmludA")),
        ("crit", json!(["exp"])),
        ("crit", json!([])),
        ("crit", json!(null)),
        ("b64", json!(false)),
        ("b64", json!(true)),
        ("zip", json!("DEF")),
        ("cty", json!("JWT")),
        ("cty", json!("at+jwt")),
        ("foo", json!("bar")),
        ("foo", json!(null)),
        ("epk", json!({"kty": "EC"})),
        ("p2s", json!("c2FsdA")),
        ("p2c", json!(1000)),
        ("enc", json!("A128GCM")),
        ("apu", json!("")),
        ("apv", json!("")),
        ("iv", json!("AAAA")),
        ("tag", json!("AAAA")),
        ("url", json!("https://evil.example")),
        ("nonce", json!("n")),
        ("Kid", json!(es.kid())),
        ("ALG", json!("ES256")),
        ("typ ", json!("at+jwt")),
        ("", json!("")),
    ] {
        let mut h = k.header(es);
        h[name] = value.clone();
        c.add(
            format!("header {name:?} = {value}"),
            k.sign(es, &h, &p),
            no(F::UnsupportedHeader),
        );
    }
    let mut h = k.header(es);
    h["crit"] = json!(["b64"]);
    h["b64"] = json!(false);
    // RFC 7797: with b64 false the payload is signed unencoded.
    let raw = format!("{}.{}", enc(&h), p);
    let sig = es.sign_raw(raw.as_bytes()).unwrap();
    c.add(
        "crit [b64] with b64 false, unencoded payload",
        format!("{}.{}.{}", enc(&h), enc(&p), b64url_encode(sig)),
        no(F::UnsupportedHeader),
    );
}
