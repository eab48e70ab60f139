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
//!
//! Modules: [`material`] (generating keys), [`signer`] (signing with a parsed
//! private key, and signing a token), [`verifier`] (verifying with a parsed
//! public key), [`set`] (the published set), [`ring`] (the set Verify reads,
//! with its signature cache).

mod material;
mod ring;
mod set;
mod signer;
mod verifier;

pub use material::KeyMaterial;
pub use ring::KeyRing;
pub use set::KeySet;
pub use signer::{SigningKey, sign};
pub use verifier::VerifyingKey;

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

/// Where a key is in its lifecycle (`docs/architecture.md`, "Keys").
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

#[cfg(test)]
mod tests;
