//! Signing keys: algorithms, lifecycle states, parsed signers and verifiers,
//! and the published key set.
//!
//! A private key is parsed once: [`SigningKey`] keeps the aws-lc key pair that
//! jsonwebtoken's `aws_lc_rs` signer wraps (its `encode` re-parses the PKCS#8
//! document on every call, which costs more than the signature itself).
//! A public key is parsed once too: [`VerifyingKey`] keeps an aws-lc
//! `ParsedPublicKey` for ES256 and EdDSA (`jsonwebtoken::crypto::verify`
//! re-parses the key on every call, ~5 % of an ES256 verify); RSA keys
//! verify through jsonwebtoken.

use crate::error::{DomainError, Result};
use crate::kind::TokenKind;
use crate::{Secret, b64url_encode};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use jsonwebtoken::DecodingKey;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// A JWS algorithm Tessera can sign with. One algorithm per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA P-256 SHA-256: the default (small keys, fast, widely supported).
    Es256,
    /// Ed25519.
    EdDsa,
    /// RSASSA-PKCS1-v1_5 SHA-256, 2048-bit modulus.
    Rs256,
    /// RSASSA-PSS SHA-256, 2048-bit modulus.
    Ps256,
}

impl Algorithm {
    /// The JOSE `alg` name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
            Self::Ps256 => "PS256",
        }
    }

    /// Parses a JOSE `alg` name, case-sensitively (RFC 7515 section 4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            "PS256" => Some(Self::Ps256),
            _ => None,
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::Es256 => jsonwebtoken::Algorithm::ES256,
            Self::EdDsa => jsonwebtoken::Algorithm::EdDSA,
            Self::Rs256 => jsonwebtoken::Algorithm::RS256,
            Self::Ps256 => jsonwebtoken::Algorithm::PS256,
        }
    }
}

/// Where a key is in its lifecycle (DESIGN: Keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Published, not yet signing.
    Pending,
    /// Signs new tokens.
    Active,
    /// Verifies only.
    Retiring,
    /// Unpublished; its tokens fail.
    Retired,
    /// Removed at once; every token it signed fails.
    Compromised,
}

impl KeyState {
    /// The name stored in the database.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::Retiring => "retiring",
            Self::Retired => "retired",
            Self::Compromised => "compromised",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Pending,
            Self::Active,
            Self::Retiring,
            Self::Retired,
            Self::Compromised,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// True when the key belongs in the JWKS (and so verifies tokens).
    pub const fn is_published(self) -> bool {
        matches!(self, Self::Pending | Self::Active | Self::Retiring)
    }
}

/// A new key's private part (PKCS#8 DER) and public JWK.
pub struct KeyMaterial {
    /// PKCS#8 v1/v2 DER of the private key.
    pub pkcs8: Secret,
    /// The public JWK (with `kid`, `alg`, `use`).
    pub public_jwk: Value,
}

impl KeyMaterial {
    /// Generates a fresh key for `alg` under `kid`.
    pub fn generate(alg: Algorithm, kid: &str) -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = match alg {
            Algorithm::Es256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(|_| DomainError::KeyMaterial("ES256 key generation failed".into()))?
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDsa => Ed25519KeyPair::generate_pkcs8(&rng)
                .map_err(|_| DomainError::KeyMaterial("Ed25519 key generation failed".into()))?
                .as_ref()
                .to_vec(),
            // RFC 7518 section 3.3 asks for at least 2048 bits.
            Algorithm::Rs256 | Algorithm::Ps256 => {
                let pair = RsaKeyPair::generate(KeySize::Rsa2048)
                    .map_err(|_| DomainError::KeyMaterial("RSA key generation failed".into()))?;
                AsDer::<Pkcs8V1Der<'_>>::as_der(&pair)
                    .map_err(|_| DomainError::KeyMaterial("RSA key encoding failed".into()))?
                    .as_ref()
                    .to_vec()
            }
        };
        let pkcs8 = Secret::new(pkcs8);
        let public_jwk = public_jwk(alg, kid, &pkcs8)?;
        Ok(Self { pkcs8, public_jwk })
    }
}

/// The public JWK of a PKCS#8 private key.
fn public_jwk(alg: Algorithm, kid: &str, pkcs8: &Secret) -> Result<Value> {
    let bad = |_| DomainError::KeyMaterial(format!("unreadable {} private key", alg.name()));
    Ok(match alg {
        Algorithm::Es256 => {
            let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.expose())
                .map_err(|_| bad(()))?;
            // Uncompressed SEC1 point: 0x04 || x (32 bytes) || y (32 bytes).
            let point = pair.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return Err(bad(()));
            }
            json!({"kty": "EC", "crv": "P-256", "x": b64url_encode(&point[1..33]),
                   "y": b64url_encode(&point[33..]), "kid": kid, "alg": alg.name(), "use": "sig"})
        }
        Algorithm::EdDsa => {
            let pair =
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.expose()).map_err(|_| bad(()))?;
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(pair.public_key().as_ref()),
                   "kid": kid, "alg": alg.name(), "use": "sig"})
        }
        Algorithm::Rs256 | Algorithm::Ps256 => {
            let pair = RsaKeyPair::from_pkcs8(pkcs8.expose()).map_err(|_| bad(()))?;
            let public = pair.public_key();
            json!({"kty": "RSA",
                   "n": b64url_encode(public.modulus().big_endian_without_leading_zero()),
                   "e": b64url_encode(public.exponent().big_endian_without_leading_zero()),
                   "kid": kid, "alg": alg.name(), "use": "sig"})
        }
    })
}

/// The parsed private key of one algorithm.
enum Parsed {
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static dyn aws_lc_rs::signature::RsaEncoding),
}

/// A parsed private key that signs. Never printed: `Debug` shows the kid only.
pub struct SigningKey {
    kid: String,
    alg: Algorithm,
    key: Parsed,
    rng: SystemRandom,
    /// The encoded JOSE header per token kind, built once (it only depends
    /// on the key and the kind).
    headers: [String; 3],
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 private key once.
    pub fn from_pkcs8(kid: &str, alg: Algorithm, pkcs8: &Secret) -> Result<Self> {
        let bad = |_| DomainError::KeyMaterial(format!("unreadable {} private key", alg.name()));
        let key = match alg {
            Algorithm::Es256 => Parsed::Ec(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.expose())
                    .map_err(|_| bad(()))?,
            ),
            Algorithm::EdDsa => Parsed::Ed(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8.expose()).map_err(|_| bad(()))?,
            ),
            Algorithm::Rs256 | Algorithm::Ps256 => {
                let pair = RsaKeyPair::from_pkcs8(pkcs8.expose()).map_err(|_| bad(()))?;
                if pair.public_modulus_len() < 256 {
                    return Err(DomainError::KeyMaterial(
                        "RSA keys must have at least 2048 bits".into(),
                    ));
                }
                let padding: &'static dyn aws_lc_rs::signature::RsaEncoding = match alg {
                    Algorithm::Ps256 => &aws_lc_rs::signature::RSA_PSS_SHA256,
                    _ => &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                };
                Parsed::Rsa(pair, padding)
            }
        };
        let header = |kind: TokenKind| {
            b64url_encode(json!({"alg": alg.name(), "typ": kind.typ(), "kid": kid}).to_string())
        };
        Ok(Self {
            kid: kid.to_owned(),
            alg,
            key,
            rng: SystemRandom::new(),
            headers: [
                header(TokenKind::Access),
                header(TokenKind::EmailVerification),
                header(TokenKind::PasswordReset),
            ],
        })
    }

    /// The encoded JOSE header of a token of `kind` signed by this key.
    pub fn encoded_header(&self, kind: TokenKind) -> &str {
        match kind {
            TokenKind::Access => &self.headers[0],
            TokenKind::EmailVerification => &self.headers[1],
            TokenKind::PasswordReset => &self.headers[2],
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// Signs `message` (the JWS signing input) and returns the raw signature
    /// (ES256: the 64-byte `r || s` form JWS wants).
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>> {
        match &self.key {
            Parsed::Ec(k) => k
                .sign(&self.rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| DomainError::Internal("signing failed".into())),
            Parsed::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            Parsed::Rsa(k, padding) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(*padding, &self.rng, message, &mut sig)
                    .map_err(|_| DomainError::Internal("signing failed".into()))?;
                Ok(sig)
            }
        }
    }
}

/// A parsed public key that verifies, with its JWK and state.
pub struct VerifyingKey {
    kid: String,
    alg: Algorithm,
    state: KeyState,
    jwk: Value,
    key: PublicKey,
}

/// How a public key verifies.
enum PublicKey {
    /// ES256 (fixed-size r‖s) or Ed25519, parsed once.
    Parsed(aws_lc_rs::signature::ParsedPublicKey),
    /// RSA: through jsonwebtoken.
    Jwt(DecodingKey),
}

/// The aws-lc key of an ES256 or EdDSA JWK (`x`, `y` base64url).
fn parsed_key(
    alg: Algorithm,
    x: &str,
    y: Option<&str>,
) -> Option<aws_lc_rs::signature::ParsedPublicKey> {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey};
    let x = crate::b64url_decode(x)?;
    match (alg, y) {
        (Algorithm::Es256, Some(y)) => {
            let y = crate::b64url_decode(y)?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            // SEC 1 uncompressed point: 0x04 ‖ x ‖ y.
            let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
            ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).ok()
        }
        (Algorithm::EdDsa, None) => ParsedPublicKey::new(&ED25519, x).ok(),
        _ => None,
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Parses a public JWK as published in our JWKS (`kid` and `alg` required).
    pub fn from_jwk(jwk: Value, state: KeyState) -> Result<Self> {
        let bad = |what: &str| DomainError::KeyMaterial(format!("unusable public JWK: {what}"));
        let text = |name: &str| jwk.get(name).and_then(Value::as_str).map(str::to_owned);
        let kid = text("kid").ok_or_else(|| bad("no kid"))?;
        let alg = text("alg")
            .and_then(|a| Algorithm::from_name(&a))
            .ok_or_else(|| bad("unknown alg"))?;
        let key = match alg {
            Algorithm::Es256 => parsed_key(
                alg,
                &text("x").ok_or_else(|| bad("no x"))?,
                Some(&text("y").ok_or_else(|| bad("no y"))?),
            )
            .map(PublicKey::Parsed)
            .ok_or_else(|| bad("bad coordinates"))?,
            Algorithm::EdDsa => parsed_key(alg, &text("x").ok_or_else(|| bad("no x"))?, None)
                .map(PublicKey::Parsed)
                .ok_or_else(|| bad("bad coordinates"))?,
            Algorithm::Rs256 | Algorithm::Ps256 => {
                let n = text("n").ok_or_else(|| bad("no n"))?;
                // At least 2048 bits: 256 bytes, 342 base64url characters.
                if n.len() < 342 {
                    return Err(bad("RSA modulus under 2048 bits"));
                }
                DecodingKey::from_rsa_components(&n, &text("e").ok_or_else(|| bad("no e"))?)
                    .map(PublicKey::Jwt)
                    .map_err(|_| bad("bad coordinates"))?
            }
        };
        Ok(Self {
            kid,
            alg,
            state,
            jwk,
            key,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key's one algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key's state when the set was built.
    pub fn state(&self) -> KeyState {
        self.state
    }

    /// The public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// True when `signature_b64` (base64url, as in the token) over `message`
    /// verifies with this key.
    pub fn verify(&self, message: &[u8], signature_b64: &str) -> bool {
        match &self.key {
            PublicKey::Parsed(key) => crate::b64url_decode(signature_b64)
                .is_some_and(|sig| key.verify_sig(message, &sig).is_ok()),
            PublicKey::Jwt(key) => {
                jsonwebtoken::crypto::verify(signature_b64, message, key, self.alg.jwt())
                    .unwrap_or(false)
            }
        }
    }
}

/// The published keys by kid: what Verify trusts. Immutable; a change
/// builds a new set and swaps the `Arc`.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<VerifyingKey>>,
}

impl KeySet {
    /// A set of the published keys among `keys`.
    pub fn new(keys: impl IntoIterator<Item = VerifyingKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .filter(|k| k.state.is_published())
                .map(|k| (k.kid.clone(), Arc::new(k)))
                .collect(),
        }
    }

    /// The key named `kid`, if published.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.keys.get(kid)
    }

    /// Every published key, sorted by kid (a stable JWKS order).
    pub fn keys(&self) -> Vec<&Arc<VerifyingKey>> {
        let mut v: Vec<_> = self.keys.values().collect();
        v.sort_by(|a, b| a.kid.cmp(&b.kid));
        v
    }

    /// The RFC 7517 JWK Set document.
    pub fn jwks(&self) -> Value {
        json!({"keys": self.keys().iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
    }
}

/// The key set currently trusted, shared between whoever publishes keys and
/// Verify, with the cache of signatures those keys verified. Readers clone an
/// `Arc` under a read lock held for that clone only.
#[derive(Debug, Default)]
pub struct KeyRing {
    set: std::sync::RwLock<Arc<KeySet>>,
    signatures: crate::sigcache::SignatureCache,
}

impl KeyRing {
    /// An empty ring whose verified-signature cache holds about
    /// `cache_bytes` (0: no cache).
    pub fn with_signature_cache(cache_bytes: u64) -> Self {
        Self {
            set: std::sync::RwLock::default(),
            signatures: crate::sigcache::SignatureCache::new(cache_bytes),
        }
    }

    /// The current set.
    pub fn current(&self) -> Arc<KeySet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces the set, and drops the cached signatures of every key that
    /// left it (retired or compromised). Hits already require the key in the
    /// current set, so this only frees their memory.
    pub fn replace(&self, set: KeySet) {
        let set = Arc::new(set);
        *self.set.write().unwrap_or_else(|p| p.into_inner()) = set.clone();
        self.signatures.retain_keys(&set);
    }

    /// Verify steps 1–3 against the current set, through the cache.
    pub fn verify_signature(
        &self,
        token: &str,
        policy: &crate::policy::Policy,
        now: crate::clock::UnixTime,
    ) -> std::result::Result<Arc<crate::verify::Signed>, crate::verify::Failure> {
        self.signatures
            .verify_signature(token, &self.current(), policy, now)
    }

    /// The verified-signature cache.
    pub fn signatures(&self) -> &crate::sigcache::SignatureCache {
        &self.signatures
    }
}

#[cfg(test)]
#[path = "keys_tests.rs"]
mod tests;
