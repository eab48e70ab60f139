//! New key material: a PKCS#8 private key and its public JWK.

use super::Algorithm;
use crate::error::{DomainError, Result};
use crate::{Secret, b64url_encode};
use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use serde_json::{Value, json};

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
