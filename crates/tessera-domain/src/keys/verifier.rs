//! Verifying with a public key parsed once.

use super::{Algorithm, KeyState};
use crate::error::{DomainError, Result};
use jsonwebtoken::DecodingKey;
use serde_json::Value;
use std::fmt;

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
