//! Signing with a private key parsed once, and the signed token it makes.

use super::Algorithm;
use crate::claims::Claims;
use crate::error::{DomainError, Result};
use crate::kind::TokenKind;
use crate::{Secret, b64url_encode, b64url_encode_into};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeyPair as RsaKeyPair;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use serde_json::json;
use std::fmt;

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

/// Serialises and signs a token: `b64(header).b64(claims).b64(sig)`.
/// The header is the key's pre-encoded one; everything is written into one
/// buffer (this is the whole cost on top of the signature: see BENCHMARKS.md).
pub fn sign(key: &SigningKey, kind: TokenKind, claims: &Claims) -> Result<String> {
    let payload = serde_json::to_vec(claims)
        .map_err(|_| DomainError::Internal("claims did not serialise".into()))?;
    let header = key.encoded_header(kind);
    // 4/3 of the payload, plus the header, plus an 86-character signature.
    let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 96);
    token.push_str(header);
    token.push('.');
    b64url_encode_into(&payload, &mut token);
    let sig = key.sign_raw(token.as_bytes())?;
    token.push('.');
    b64url_encode_into(sig, &mut token);
    Ok(token)
}
