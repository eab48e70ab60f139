//! The cache answers only what steps 1–3 would answer, and never outlives
//! its token or its key.

use super::*;
use crate::claims::{Audience, Claims};
use crate::keys::{Algorithm, KeyMaterial, KeyRing, KeyState, SigningKey, VerifyingKey};
use crate::kind::TokenKind;
use crate::revocation::{MemoryRevocations, RevocationEvent};
use crate::verify::{Expectation, sign, verify_cached};

const NOW: i64 = 1_700_000_000;
const EXPECT: Expectation<'static> = Expectation {
    audience: "api",
    kind: TokenKind::Access,
};

struct Fx {
    ring: KeyRing,
    key: SigningKey,
    public: serde_json::Value,
    policy: Policy,
}

fn fx() -> Fx {
    let m = KeyMaterial::generate(Algorithm::Es256, "k1").unwrap();
    Fx {
        ring: ring(&m.public_jwk, 1 << 20),
        key: SigningKey::from_pkcs8("k1", Algorithm::Es256, &m.pkcs8).unwrap(),
        public: m.public_jwk,
        policy: Policy::default(),
    }
}

/// A ring trusting `public`, with a cache of `bytes`.
fn ring(public: &serde_json::Value, bytes: u64) -> KeyRing {
    let ring = KeyRing::with_signature_cache(bytes);
    let key = VerifyingKey::from_jwk(public.clone(), KeyState::Active).unwrap();
    ring.replace(KeySet::new([key]));
    ring
}

fn token(f: &Fx, jti: &str) -> String {
    let c = Claims {
        iss: f.policy.issuer.clone(),
        sub: "alice".into(),
        aud: Audience::One("api".into()),
        exp: NOW + 600,
        nbf: NOW,
        iat: NOW,
        jti: jti.into(),
        sid: Some("f1".into()),
        ver: 0,
        scope: None,
        client_id: None,
        extra: Default::default(),
    };
    sign(&f.key, TokenKind::Access, &c).unwrap()
}

fn check(f: &Fx, t: &str, view: &MemoryRevocations, now: i64) -> Result<(), Failure> {
    verify_cached(t, &f.ring, &f.policy, &EXPECT, view, now).map(drop)
}

#[test]
fn a_verified_token_is_cached_once_and_answers_again() {
    let f = fx();
    let t = token(&f, "j1");
    let view = MemoryRevocations::new();
    assert_eq!(check(&f, &t, &view, NOW), Ok(()));
    assert_eq!(f.ring.signatures().len(), 1);
    assert_eq!(check(&f, &t, &view, NOW + 1), Ok(()));
    assert_eq!(f.ring.signatures().len(), 1);
    assert!(f.ring.signatures().weight() > 0);
}

#[test]
fn failures_are_never_cached() {
    let f = fx();
    let t = token(&f, "j1");
    let (input, _) = t.rsplit_once('.').unwrap();
    let forged = format!("{input}.{}", "A".repeat(86));
    let view = MemoryRevocations::new();
    assert_eq!(check(&f, &forged, &view, NOW), Err(Failure::BadSignature));
    assert_eq!(check(&f, &forged, &view, NOW), Err(Failure::BadSignature));
    assert!(f.ring.signatures().is_empty());
}

#[test]
fn a_cached_token_is_still_rejected_once_revoked() {
    let f = fx();
    let t = token(&f, "j1");
    let view = MemoryRevocations::new();
    assert_eq!(check(&f, &t, &view, NOW), Ok(()));
    view.apply(&RevocationEvent::Jti {
        jti: "j1".into(),
        until: NOW + 700,
    });
    assert_eq!(check(&f, &t, &view, NOW), Err(Failure::Revoked));
    let view = MemoryRevocations::new();
    view.apply(&RevocationEvent::Family {
        family_id: "f1".into(),
        until: NOW + 700,
    });
    assert_eq!(check(&f, &t, &view, NOW), Err(Failure::Revoked));
}

#[test]
fn a_cached_token_expires_and_its_entry_dies() {
    let f = fx();
    let t = token(&f, "j1");
    let view = MemoryRevocations::new();
    assert_eq!(check(&f, &t, &view, NOW), Ok(()));
    let after = NOW + 600 + f.policy.clock_skew;
    assert_eq!(check(&f, &t, &view, after), Err(Failure::Expired));
    assert!(f.ring.signatures().is_empty(), "removed when met");
    // And the purge removes what is never met again.
    assert_eq!(check(&f, &t, &view, NOW), Ok(()));
    f.ring
        .signatures()
        .purge_expired(after - 1, f.policy.clock_skew);
    assert_eq!(f.ring.signatures().len(), 1);
    f.ring
        .signatures()
        .purge_expired(after, f.policy.clock_skew);
    assert!(f.ring.signatures().is_empty());
}

#[test]
fn a_key_leaving_the_set_drops_its_entries_and_its_hits() {
    let f = fx();
    let (a, b) = (token(&f, "j1"), token(&f, "j2"));
    let view = MemoryRevocations::new();
    assert_eq!(check(&f, &a, &view, NOW), Ok(()));
    assert_eq!(check(&f, &b, &view, NOW), Ok(()));
    assert_eq!(f.ring.signatures().len(), 2);
    // Retired or compromised: the key leaves the published set.
    f.ring.replace(KeySet::new([]));
    assert!(f.ring.signatures().is_empty());
    assert_eq!(check(&f, &a, &view, NOW), Err(Failure::UnknownKey));
}

#[test]
fn a_hit_needs_its_key_in_the_current_set_even_before_the_purge() {
    let f = fx();
    let t = token(&f, "j1");
    let view = MemoryRevocations::new();
    assert_eq!(check(&f, &t, &view, NOW), Ok(()));
    // A set without the key, looked up directly (no purge ran).
    let empty = KeySet::new([]);
    let r = f
        .ring
        .signatures()
        .verify_signature(&t, &empty, &f.policy, NOW);
    assert_eq!(r.map(drop), Err(Failure::UnknownKey));
    // The same key back (same kid and material) verifies again.
    let back = KeySet::new([VerifyingKey::from_jwk(f.public.clone(), KeyState::Active).unwrap()]);
    let r = f
        .ring
        .signatures()
        .verify_signature(&t, &back, &f.policy, NOW);
    assert!(r.is_ok());
}

#[test]
fn a_key_kill_rejects_cached_tokens_through_the_view_too() {
    let f = fx();
    let t = token(&f, "j1");
    let view = MemoryRevocations::new();
    assert_eq!(check(&f, &t, &view, NOW), Ok(()));
    view.apply(&RevocationEvent::Key { kid: "k1".into() });
    assert_eq!(check(&f, &t, &view, NOW), Err(Failure::Revoked));
}

#[test]
fn a_disabled_cache_holds_nothing() {
    let c = SignatureCache::new(0);
    let f = fx();
    let t = token(&f, "j1");
    assert!(
        c.verify_signature(&t, &f.ring.current(), &f.policy, NOW)
            .is_ok()
    );
    assert!(c.is_empty());
}

#[test]
fn the_cache_stays_within_its_bytes() {
    let f = fx();
    let ring = ring(&f.public, 64 * 1024);
    for i in 0..1000 {
        let t = token(&f, &format!("j{i}"));
        assert!(ring.verify_signature(&t, &f.policy, NOW).is_ok());
    }
    assert!(ring.signatures().weight() <= 64 * 1024);
    assert!(ring.signatures().len() < 1000);
}
