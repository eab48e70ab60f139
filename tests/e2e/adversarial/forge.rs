//! What an attacker (and the suite) needs to write tokens: the deployment's
//! real signing keys (one of each algorithm, reached through the key
//! manager the harness already exposes: `TestApp::manager`), keys of its
//! own, and the public keys in every encoding a confused verifier might
//! take for an HMAC secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::sync::Arc;
use tessera_domain::b64url_encode;
use tessera_domain::keys::{Algorithm, KeyMaterial, SigningKey};

use crate::harness::{AUDIENCE, ISSUER};

/// The subject of forged tokens: never revoked, so a case fails only for
/// what it is about.
pub const SUBJECT: &str = "adv-subject";

/// Everything the cases are built from.
pub struct Kit {
    /// The deployment clock's now when the cases were built.
    pub now: i64,
    /// The real keys, published: ES256, EdDSA, RS256 (retiring), PS256
    /// (active), in that order.
    pub keys: Vec<Arc<SigningKey>>,
    /// The published JWK of each of `keys`, same order.
    pub jwks: Vec<Value>,
    /// The whole JWKS document as served.
    pub jwks_json: String,
    /// `ver` of [`SUBJECT`] (what Issue put in its tokens).
    pub ver: u64,
    /// Real tokens from the real RPCs.
    pub access: String,
    pub refresh: String,
    pub email: String,
    pub reset: String,
    /// A subject revoked once: its current `ver` (tokens below it fail),
    /// and a real token minted before the revocation.
    pub revoked_subject: String,
    pub revoked_subject_ver: u64,
    pub before_subject_revocation: String,
    /// A revoked family and a real access token of it.
    pub revoked_family: String,
    pub family_token: String,
    /// A revoked jti.
    pub revoked_jti: String,
}

/// A key the deployment never published, of each algorithm.
pub fn foreign_key(alg: Algorithm, kid: &str) -> SigningKey {
    let m = KeyMaterial::generate(alg, kid).unwrap();
    SigningKey::from_pkcs8(kid, alg, &m.pkcs8).unwrap()
}

/// The public JWK of a key the deployment never published (what an
/// embedded `jwk` header would carry).
pub fn foreign_jwk(alg: Algorithm, kid: &str) -> Value {
    KeyMaterial::generate(alg, kid).unwrap().public_jwk
}

pub fn enc(json: &Value) -> String {
    b64url_encode(json.to_string())
}

impl Kit {
    pub fn key(&self, alg: Algorithm) -> &SigningKey {
        self.keys.iter().find(|k| k.algorithm() == alg).unwrap()
    }

    pub fn jwk(&self, alg: Algorithm) -> &Value {
        let kid = self.key(alg).kid();
        self.jwks.iter().find(|j| j["kid"] == kid).unwrap()
    }

    pub fn es(&self) -> &SigningKey {
        self.key(Algorithm::Es256)
    }

    /// The header Tessera mints for an access token of `key`.
    pub fn header(&self, key: &SigningKey) -> Value {
        json!({"alg": key.algorithm().name(), "kid": key.kid(), "typ": "at+jwt"})
    }

    /// Claims of a valid access token (fresh jti, now).
    pub fn claims(&self) -> Value {
        json!({
            "iss": ISSUER, "sub": SUBJECT, "aud": AUDIENCE,
            "exp": self.now + 600, "nbf": self.now, "iat": self.now,
            "jti": tessera_domain::random_id(), "ver": self.ver, "scope": "orders:read",
        })
    }

    /// [`Kit::claims`] with one member set (or removed, with `None`).
    pub fn claims_with(&self, name: &str, value: Option<Value>) -> Value {
        let mut c = self.claims();
        match value {
            Some(v) => c[name] = v,
            None => {
                c.as_object_mut().unwrap().remove(name);
            }
        }
        c
    }

    /// A token of `header` and `payload` signed by `key`.
    pub fn sign(&self, key: &SigningKey, header: &Value, payload: &Value) -> String {
        sign_parts(key, &enc(header), &enc(payload))
    }

    /// A token of raw JSON texts (duplicate names, `1.0`, invalid UTF-8…).
    pub fn sign_text(&self, key: &SigningKey, header: &[u8], payload: &[u8]) -> String {
        sign_parts(key, &b64url_encode(header), &b64url_encode(payload))
    }

    /// A valid access token signed by `key`.
    pub fn valid(&self, key: &SigningKey) -> String {
        self.sign(key, &self.header(key), &self.claims())
    }

    /// A valid ES256 token's header and payload parts, and its signature
    /// bytes.
    pub fn es_parts(&self) -> (String, Vec<u8>) {
        let t = self.valid(self.es());
        let (input, sig) = t.rsplit_once('.').unwrap();
        (
            input.to_owned(),
            tessera_domain::b64url_decode(sig).unwrap(),
        )
    }
}

/// `h64.p64.sig` with the signature by `key` over the exact parts given.
pub fn sign_parts(key: &SigningKey, h64: &str, p64: &str) -> String {
    let input = format!("{h64}.{p64}");
    let sig = key.sign_raw(input.as_bytes()).unwrap();
    format!("{input}.{}", b64url_encode(sig))
}

/// `input` with an HMAC signature keyed with `secret`.
pub fn hmac(alg: &str, input: &str, secret: &[u8]) -> String {
    use aws_lc_rs::hmac;
    let algorithm = match alg {
        "HS256" => hmac::HMAC_SHA256,
        "HS384" => hmac::HMAC_SHA384,
        _ => hmac::HMAC_SHA512,
    };
    let tag = hmac::sign(&hmac::Key::new(algorithm, secret), input.as_bytes());
    format!("{input}.{}", b64url_encode(tag.as_ref()))
}

fn b64(jwk: &Value, member: &str) -> Vec<u8> {
    tessera_domain::b64url_decode(jwk[member].as_str().unwrap()).unwrap()
}

/// A DER length.
fn der_len(n: usize) -> Vec<u8> {
    match n {
        0..=127 => vec![u8::try_from(n).unwrap()],
        128..=255 => vec![0x81, u8::try_from(n).unwrap()],
        _ => vec![
            0x82,
            u8::try_from(n >> 8).unwrap(),
            u8::try_from(n & 0xff).unwrap(),
        ],
    }
}

fn der(tag: u8, body: &[u8]) -> Vec<u8> {
    [&[tag][..], &der_len(body.len()), body].concat()
}

/// A DER INTEGER of unsigned big-endian bytes.
pub fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let body = match trimmed.first() {
        None => vec![0],
        Some(b) if b & 0x80 != 0 => [&[0u8][..], &trimmed].concat(),
        Some(_) => trimmed,
    };
    der(0x02, &body)
}

/// An ECDSA signature `r ‖ s` in the DER form X.509 uses (not JWS's).
pub fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    der(0x30, &[der_uint(r), der_uint(s)].concat())
}

/// The SubjectPublicKeyInfo DER of a published JWK.
pub fn spki_der(jwk: &Value) -> Vec<u8> {
    let (algorithm, key) = match jwk["kty"].as_str().unwrap() {
        // id-ecPublicKey, prime256v1; the uncompressed point.
        "EC" => (
            hex("06072a8648ce3d020106082a8648ce3d030107"),
            [vec![4u8], b64(jwk, "x"), b64(jwk, "y")].concat(),
        ),
        // id-Ed25519; the 32 bytes.
        "OKP" => (hex("06032b6570"), b64(jwk, "x")),
        // rsaEncryption, NULL; RSAPublicKey ::= SEQUENCE { n, e }.
        _ => (
            hex("06092a864886f70d0101010500"),
            der(
                0x30,
                &[der_uint(&b64(jwk, "n")), der_uint(&b64(jwk, "e"))].concat(),
            ),
        ),
    };
    let bits = [&[0u8][..], &key].concat();
    der(0x30, &[der(0x30, &algorithm), der(0x03, &bits)].concat())
}

/// The PEM of [`spki_der`], lines of 64, with or without the final newline.
pub fn spki_pem(jwk: &Value, final_newline: bool) -> Vec<u8> {
    let body = STANDARD.encode(spki_der(jwk));
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let mut pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----",
        lines.join("\n")
    );
    if final_newline {
        pem.push('\n');
    }
    pem.into_bytes()
}

/// The raw public key bytes: EC `x ‖ y` (and the SEC 1 point), Ed25519 `x`,
/// RSA `n`.
pub fn raw_public(jwk: &Value) -> Vec<(&'static str, Vec<u8>)> {
    match jwk["kty"].as_str().unwrap() {
        "EC" => vec![
            ("raw x||y", [b64(jwk, "x"), b64(jwk, "y")].concat()),
            (
                "SEC1 point",
                [vec![4u8], b64(jwk, "x"), b64(jwk, "y")].concat(),
            ),
            ("raw x", b64(jwk, "x")),
        ],
        "OKP" => vec![("raw x", b64(jwk, "x"))],
        _ => vec![("raw n", b64(jwk, "n"))],
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The encodings are the published keys themselves, not lookalikes:
/// aws-lc reads each SubjectPublicKeyInfo DER (the body of the PEM) and
/// verifies a real token of the key with it.
pub fn check_encodings(k: &Kit) {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey,
        VerificationAlgorithm,
    };
    let algorithms: [(Algorithm, &'static dyn VerificationAlgorithm); 3] = [
        (Algorithm::Es256, &ECDSA_P256_SHA256_FIXED),
        (Algorithm::EdDsa, &ED25519),
        (Algorithm::Rs256, &RSA_PKCS1_2048_8192_SHA256),
    ];
    for (alg, verification) in algorithms {
        let der = spki_der(k.jwk(alg));
        let pem = String::from_utf8(spki_pem(k.jwk(alg), false)).unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(STANDARD.decode(body).unwrap(), der, "the PEM wraps the DER");
        let t = k.valid(k.key(alg));
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = tessera_domain::b64url_decode(sig).unwrap();
        UnparsedPublicKey::new(verification, &der)
            .verify(input.as_bytes(), &sig)
            .unwrap_or_else(|_| panic!("the {} DER is not the published key", alg.name()));
    }
}
