//! The cost Tessera adds on top of the bare cryptography.
//!
//! - verify: the whole in-process pipeline (steps 1–5) against a bare
//!   signature verification of the same token with the same key.
//! - sign: minting a token (header, claims, base64url, signature) against a
//!   bare signature with the parsed key over the same signing input.
//!
//! `cargo bench -p tessera-domain --bench verify`; figures in BENCHMARKS.md.

use criterion::{Criterion, criterion_group, criterion_main};

mod common;
use std::hint::black_box;
use tessera_domain::keys::{Algorithm, KeyMaterial, KeySet, KeyState, SigningKey, VerifyingKey};
use tessera_domain::kind::TokenKind;
use tessera_domain::policy::Policy;
use tessera_domain::revocation::{MemoryRevocations, RevocationEvent};
use tessera_domain::verify::{Expectation, sign, verify};

const NOW: i64 = 1_800_000_000;

fn benches(c: &mut Criterion) {
    for alg in [Algorithm::Es256, Algorithm::EdDsa] {
        let material = KeyMaterial::generate(alg, "bench-kid").unwrap();
        let key = SigningKey::from_pkcs8("bench-kid", alg, &material.pkcs8).unwrap();
        let policy = Policy::default();
        let keys =
            KeySet::new([
                VerifyingKey::from_jwk(material.public_jwk.clone(), KeyState::Active).unwrap(),
            ]);
        let c0 = common::claims(&policy, NOW);
        let token = sign(&key, TokenKind::Access, &c0).unwrap();
        let (input, sig) = token.rsplit_once('.').unwrap();
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(material.public_jwk.clone()).unwrap();
        let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let jalg = match alg {
            Algorithm::Es256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::Rs256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::Ps256 => jsonwebtoken::Algorithm::PS256,
        };
        // A view with some entries, none matching, as in production.
        let view = MemoryRevocations::new();
        for i in 0..10_000 {
            view.apply(&RevocationEvent::Jti {
                jti: format!("other-{i}"),
                until: NOW + 900,
            });
        }
        let expect = Expectation {
            audience: "orders-api",
            kind: TokenKind::Access,
        };
        assert!(verify(&token, &keys, &policy, &expect, &view, NOW).is_ok());

        let mut g = c.benchmark_group(format!("verify/{}", alg.name()));
        g.bench_function("bare_signature", |b| {
            b.iter(|| {
                jsonwebtoken::crypto::verify(
                    black_box(sig),
                    black_box(input.as_bytes()),
                    &decoding,
                    jalg,
                )
                .unwrap()
            })
        });
        g.bench_function("tessera_pipeline", |b| {
            b.iter(|| verify(black_box(&token), &keys, &policy, &expect, &view, NOW).unwrap())
        });
        g.finish();

        let mut g = c.benchmark_group(format!("sign/{}", alg.name()));
        g.bench_function("bare_sign_parsed_key", |b| {
            b.iter(|| key.sign_raw(black_box(input.as_bytes())).unwrap())
        });
        g.bench_function("tessera_sign", |b| {
            b.iter(|| sign(&key, TokenKind::Access, black_box(&c0)).unwrap())
        });
        g.finish();
    }
}

criterion_group! {
    name = group;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4))
        .sample_size(50);
    targets = benches
}
criterion_main!(group);
