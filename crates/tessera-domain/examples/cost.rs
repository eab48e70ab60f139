//! Runs one operation of the Verify/sign benchmark N times, for counting
//! instructions under `valgrind --tool=callgrind` (deterministic, unlike
//! wall-clock time on a shared machine): `scripts/bench-instructions.sh`.
//!
//! Usage: `cost <bare_verify|pipeline|bare_sign|tessera_sign|setup> <iterations>`.

use std::hint::black_box;

#[path = "../benches/common/mod.rs"]
mod common;
use tessera_domain::keys::{Algorithm, KeyMaterial, KeySet, KeyState, SigningKey, VerifyingKey};
use tessera_domain::kind::TokenKind;
use tessera_domain::policy::Policy;
use tessera_domain::revocation::MemoryRevocations;
use tessera_domain::verify::{Expectation, sign, verify};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map_or("setup", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let now = 1_800_000_000;
    let material = KeyMaterial::generate(Algorithm::Es256, "kid").unwrap();
    let key = SigningKey::from_pkcs8("kid", Algorithm::Es256, &material.pkcs8).unwrap();
    let policy = Policy::default();
    let keys = KeySet::new([
        VerifyingKey::from_jwk(material.public_jwk.clone(), KeyState::Active).unwrap(),
    ]);
    let claims = common::claims(&policy, now);
    let token = sign(&key, TokenKind::Access, &claims).unwrap();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(material.public_jwk).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let view = MemoryRevocations::new();
    let expect = Expectation {
        audience: "orders-api",
        kind: TokenKind::Access,
    };
    for _ in 0..n {
        match op {
            "bare_verify" => {
                assert!(
                    jsonwebtoken::crypto::verify(
                        black_box(sig),
                        black_box(input.as_bytes()),
                        &decoding,
                        jsonwebtoken::Algorithm::ES256
                    )
                    .unwrap()
                );
            }
            "pipeline" => {
                verify(black_box(&token), &keys, &policy, &expect, &view, now).unwrap();
            }
            "bare_sign" => {
                black_box(key.sign_raw(black_box(input.as_bytes())).unwrap());
            }
            "tessera_sign" => {
                black_box(sign(&key, TokenKind::Access, black_box(&claims)).unwrap());
            }
            _ => {}
        }
    }
}
