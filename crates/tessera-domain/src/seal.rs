//! Private keys at rest: sealed with AES-256-GCM under a key-encryption key
//! (KEK). The kid is the associated data, so a sealed key cannot be swapped
//! onto another key's row. The sealed form is `nonce (12) || ciphertext || tag`.

use crate::error::{DomainError, Result};
use crate::{Secret, random_bytes, sha256};
use aws_lc_rs::aead::{AES_256_GCM, Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
use std::fmt;

/// Length of a KEK in bytes.
pub const KEK_LEN: usize = 32;

/// A key-encryption key. `Debug` prints only its id.
pub struct Kek {
    id: String,
    key: RandomizedNonceKey,
}

impl fmt::Debug for Kek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Kek")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Kek {
    /// A KEK from 32 secret bytes. Its id is a short fingerprint (the first
    /// 8 bytes of SHA-256 of the key, hex), stored beside each sealed key so a
    /// rewrap can tell which rows still need it.
    pub fn from_bytes(bytes: &Secret) -> Result<Self> {
        if bytes.expose().len() != KEK_LEN {
            return Err(DomainError::field(
                "kek",
                format!("a key-encryption key is {KEK_LEN} bytes"),
            ));
        }
        let key = RandomizedNonceKey::new(&AES_256_GCM, bytes.expose())
            .map_err(|_| DomainError::KeyMaterial("KEK rejected".into()))?;
        let digest = sha256(bytes.expose());
        let id = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { id, key })
    }

    /// 32 fresh random bytes for a new KEK.
    pub fn generate_bytes() -> Secret {
        Secret::new(random_bytes(KEK_LEN))
    }

    /// The KEK's fingerprint id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Seals `plaintext`, binding it to `kid`.
    pub fn seal(&self, kid: &str, plaintext: &Secret) -> Result<Vec<u8>> {
        let mut buf = plaintext.expose().to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| DomainError::Internal("sealing failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens what [`Kek::seal`] sealed for `kid`.
    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Secret> {
        if sealed.len() < NONCE_LEN {
            return Err(DomainError::Unseal);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| DomainError::Unseal)?;
        let mut buf = ct.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| DomainError::Unseal)?;
        let out = Secret::new(plain.to_vec());
        buf.iter_mut().for_each(|b| *b = 0);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kek() -> Kek {
        Kek::from_bytes(&Kek::generate_bytes()).unwrap()
    }

    #[test]
    fn round_trip() {
        let k = kek();
        let s = k.seal("kid1", &Secret::new(b"private".to_vec())).unwrap();
        assert!(
            !s.windows(7).any(|w| w == b"private"),
            "ciphertext hides it"
        );
        assert_eq!(k.open("kid1", &s).unwrap().expose(), b"private");
    }

    #[test]
    fn wrong_kid_wrong_kek_or_tamper_fail() {
        let k = kek();
        let s = k.seal("kid1", &Secret::new(b"private".to_vec())).unwrap();
        assert!(matches!(k.open("kid2", &s), Err(DomainError::Unseal)));
        assert!(matches!(kek().open("kid1", &s), Err(DomainError::Unseal)));
        let mut t = s.clone();
        *t.last_mut().unwrap() ^= 1;
        assert!(matches!(k.open("kid1", &t), Err(DomainError::Unseal)));
        assert!(matches!(k.open("kid1", &s[..5]), Err(DomainError::Unseal)));
    }

    #[test]
    fn nonces_differ_and_length_is_checked() {
        let k = kek();
        let p = Secret::new(b"x".to_vec());
        assert_ne!(k.seal("a", &p).unwrap(), k.seal("a", &p).unwrap());
        assert!(Kek::from_bytes(&Secret::new(vec![0; 16])).is_err());
        assert!(!format!("{k:?}").contains("key:"));
    }
}
