//! Properties of token parsing and the whole Verify pipeline over arbitrary
//! input: it never panics, and nothing but a token our key signed, with
//! only the header parameters we mint and claims of their types, is ever
//! valid. Case counts are kept small enough for CI (a few seconds in all);
//! `PROPTEST_CASES` raises them for a longer run.

use super::tests::{EXPECT, Fx, NOW, claims, forge, fx, run};
use super::*;
use crate::b64url_encode;
use crate::keys::{KeyMaterial, KeyRing, SigningKey};
use proptest::prelude::*;
use serde_json::json;
use std::sync::LazyLock;

/// One fixture for every case: generating keys per case would dominate.
static FX: LazyLock<Fx> = LazyLock::new(fx);

/// A real token of the fixture key.
static TOKEN: LazyLock<String> =
    LazyLock::new(|| sign(&FX.key, TokenKind::Access, &claims(&FX.policy)).unwrap());

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Shrinking a failure is worth more than speed, but bounded.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Header parameter names: mostly the ones that matter, sometimes any.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "alg", "kid", "typ", "jku", "jwk", "x5u", "x5c", "x5t", "crit", "b64", "zip", "cty",
        ])
        .prop_map(str::to_owned),
        ".{0,6}",
    ]
}

/// A header close to ours: each minted parameter kept, changed or dropped,
/// and sometimes a parameter more.
fn header_like() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        3 => Just(json!("ES256")),
        1 => prop::sample::select(vec!["EdDSA", "RS256", "PS256", "HS256", "none", "es256", ""])
            .prop_map(Value::from),
        1 => json_value(),
    ];
    let kid = prop_oneof![3 => Just(json!("k1")), 1 => Just(json!("k2")), 1 => json_value()];
    let typ = prop_oneof![3 => Just(json!("at+jwt")), 1 => json_value()];
    let extra = prop::collection::vec((header_name(), json_value()), 0..2);
    (
        prop::option::weighted(0.9, alg),
        prop::option::weighted(0.9, kid),
        prop::option::weighted(0.9, typ),
        extra,
    )
        .prop_map(|(alg, kid, typ, extra)| {
            let mut h = serde_json::Map::new();
            for (name, v) in [("alg", alg), ("kid", kid), ("typ", typ)] {
                if let Some(v) = v {
                    h.insert(name.into(), v);
                }
            }
            for (name, v) in extra {
                h.insert(name, v);
            }
            Value::Object(h)
        })
}

/// How to damage a token.
#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at an index with another ASCII byte.
    Replace(prop::sample::Index, u8),
    /// Remove the byte at an index.
    Remove(prop::sample::Index),
    /// Insert an ASCII byte at an index.
    Insert(prop::sample::Index, u8),
    /// Keep only a prefix.
    Truncate(prop::sample::Index),
    /// Swap two of the three parts.
    Swap(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let byte = prop_oneof![
        4 => prop::sample::select(
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".to_vec()
        ),
        1 => prop::sample::select(b".=+/ \n\t\"{}".to_vec()),
    ];
    prop_oneof![
        (any::<prop::sample::Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        (any::<prop::sample::Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
        (0..3usize, 0..3usize).prop_map(|(a, b)| Mutation::Swap(a, b)),
    ]
}

fn mutate(token: &str, m: &Mutation) -> String {
    let mut b = token.as_bytes().to_vec();
    match m {
        Mutation::Replace(i, c) => {
            let i = i.index(b.len());
            b[i] = *c;
        }
        Mutation::Remove(i) => {
            b.remove(i.index(b.len()));
        }
        Mutation::Insert(i, c) => b.insert(i.index(b.len() + 1), *c),
        Mutation::Truncate(i) => b.truncate(i.index(b.len())),
        Mutation::Swap(x, y) => {
            let mut parts: Vec<&str> = token.split('.').collect();
            parts.swap(*x, *y);
            return parts.join(".");
        }
    }
    // Only ASCII was written into an ASCII token.
    String::from_utf8(b).unwrap()
}

/// Verify through the signature cache, over the fixture's key: a token
/// near one that verified before must not be taken for it.
fn run_cached(token: &str) -> Result<(), Failure> {
    static RING: LazyLock<KeyRing> = LazyLock::new(|| {
        let ring = KeyRing::with_signature_cache(1 << 20);
        let jwk = FX.keys.get("k1").unwrap().jwk().clone();
        ring.replace(crate::keys::KeySet::new([
            crate::keys::VerifyingKey::from_jwk(jwk, crate::keys::KeyState::Active).unwrap(),
        ]));
        ring
    });
    verify_cached(
        token,
        &RING,
        &FX.policy,
        &EXPECT,
        &MemoryRevocations::new(),
        NOW,
    )
    .map(|_| ())
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary text: an answer, never a panic, never valid.
    #[test]
    fn arbitrary_text_is_never_valid(s in "\\PC{0,200}|[A-Za-z0-9_.=+/-]{0,300}") {
        prop_assert!(run(&FX, &s, NOW).is_err());
        prop_assert!(run_cached(&s).is_err());
    }

    /// Arbitrary bytes, read as the text a request could carry.
    #[test]
    fn arbitrary_bytes_are_never_valid(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let s = String::from_utf8_lossy(&bytes);
        prop_assert!(run(&FX, &s, NOW).is_err());
    }

    /// Three base64url parts of arbitrary JSON and an arbitrary signature:
    /// without our key nothing verifies.
    #[test]
    fn unsigned_json_is_never_valid(
        h in json_value(),
        p in json_value(),
        sig in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let t = format!(
            "{}.{}.{}",
            b64url_encode(h.to_string()),
            b64url_encode(p.to_string()),
            b64url_encode(sig)
        );
        prop_assert!(run(&FX, &t, NOW).is_err());
    }

    /// A real token, damaged once: never valid (unless the damage undid
    /// itself), on the plain and the cached path.
    #[test]
    fn a_mutated_real_token_is_never_valid(m in mutation()) {
        prop_assert!(run(&FX, &TOKEN, NOW).is_ok());
        prop_assert!(run_cached(&TOKEN).is_ok());
        let t = mutate(&TOKEN, &m);
        if t != *TOKEN {
            prop_assert!(run(&FX, &t, NOW).is_err(), "{m:?} verified");
            prop_assert!(run_cached(&t).is_err(), "{m:?} verified from the cache");
        }
    }

    /// Signed by our key but with any header close to ours: valid only
    /// with exactly the parameters we mint, and `alg` the key's own.
    #[test]
    fn only_minted_headers_are_ever_valid(h in header_like()) {
        let p = serde_json::to_value(claims(&FX.policy)).unwrap();
        let r = run(&FX, &forge(&FX, &h, &p), NOW);
        let ours = h.as_object().unwrap().iter().all(|(k, _)| ["alg", "kid", "typ"].contains(&k.as_str()));
        if r.is_ok() {
            prop_assert!(ours, "{h}");
            prop_assert_eq!(&h["alg"], "ES256");
            prop_assert_eq!(&h["kid"], "k1");
        }
    }

    /// Signed by our key, one claim replaced by any JSON value: never a
    /// panic; valid only if the value is of the claim's type.
    #[test]
    fn claims_of_any_type_never_pass_untyped(
        name in prop::sample::select(vec![
            "iss", "sub", "aud", "exp", "nbf", "iat", "jti", "ver", "sid", "scope", "client_id",
        ]),
        v in json_value(),
    ) {
        let mut p = serde_json::to_value(claims(&FX.policy)).unwrap();
        p[name] = v.clone();
        let r = run(&FX, &forge(&FX, &json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"}), &p), NOW);
        if let Ok(c) = r {
            let typed = match name {
                "exp" => c.exp == v.as_i64().unwrap_or(-1),
                "nbf" => c.nbf == v.as_i64().unwrap_or(-1),
                "iat" => c.iat == v.as_i64().unwrap_or(-1),
                "ver" => v.as_u64() == Some(c.ver),
                "aud" => v.is_string() || v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
                _ => v.as_str().is_some(),
            };
            prop_assert!(typed, "{name} = {v} passed");
        }
    }

    /// Arbitrary claims signed by a key that is not ours, under our kid:
    /// the signature fails, whatever the claims say.
    #[test]
    fn a_foreign_key_never_passes(sub in "\\PC{1,20}", ver in any::<u64>()) {
        static OTHER: LazyLock<SigningKey> = LazyLock::new(|| {
            let m = KeyMaterial::generate(Algorithm::Es256, "k1").unwrap();
            SigningKey::from_pkcs8("k1", Algorithm::Es256, &m.pkcs8).unwrap()
        });
        let mut c = claims(&FX.policy);
        c.sub = sub;
        c.ver = ver;
        let t = sign(&OTHER, TokenKind::Access, &c).unwrap();
        prop_assert_eq!(run(&FX, &t, NOW), Err(Failure::BadSignature));
    }
}
