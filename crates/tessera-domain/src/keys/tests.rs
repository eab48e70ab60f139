//! Key material: every algorithm, redaction, publication.
use super::*;

#[test]
fn every_algorithm_signs_and_verifies() {
    for alg in [
        Algorithm::Es256,
        Algorithm::EdDsa,
        Algorithm::Rs256,
        Algorithm::Ps256,
    ] {
        let m = KeyMaterial::generate(alg, "k1").unwrap();
        let s = SigningKey::from_pkcs8("k1", alg, &m.pkcs8).unwrap();
        let v = VerifyingKey::from_jwk(m.public_jwk.clone(), KeyState::Active).unwrap();
        let sig = crate::b64url_encode(s.sign_raw(b"hello").unwrap());
        assert!(v.verify(b"hello", &sig), "{alg:?}");
        assert!(!v.verify(b"hellO", &sig), "{alg:?}");
        assert_eq!(m.public_jwk["alg"], alg.name());
        assert!(m.public_jwk.get("d").is_none(), "no private part in a JWK");
    }
}

#[test]
fn debug_never_prints_key_material() {
    let m = KeyMaterial::generate(Algorithm::Es256, "k1").unwrap();
    let s = SigningKey::from_pkcs8("k1", Algorithm::Es256, &m.pkcs8).unwrap();
    assert_eq!(format!("{:?}", m.pkcs8), "[redacted]");
    assert!(!format!("{s:?}").contains(&format!("{:?}", m.pkcs8.expose())));
}

#[test]
fn key_set_publishes_only_published_states() {
    let mk = |kid: &str, st| {
        let m = KeyMaterial::generate(Algorithm::Es256, kid).unwrap();
        VerifyingKey::from_jwk(m.public_jwk, st).unwrap()
    };
    let set = KeySet::new([
        mk("a", KeyState::Pending),
        mk("b", KeyState::Active),
        mk("c", KeyState::Retiring),
        mk("d", KeyState::Retired),
        mk("e", KeyState::Compromised),
    ]);
    let kids: Vec<_> = set.keys().iter().map(|k| k.kid().to_owned()).collect();
    assert_eq!(kids, ["a", "b", "c"]);
    assert_eq!(set.jwks()["keys"].as_array().unwrap().len(), 3);
}
