//! Secrets that must never be printed, and the randomness and hashing helpers.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use std::fmt;

/// Bytes that must never reach a log line: `Debug` prints `[redacted]`, there
/// is no `Display`, and the bytes are zeroed on drop (`zeroize`: volatile
/// writes the optimiser cannot elide). Copies the crypto library makes are
/// its own to clear.
#[derive(Clone, PartialEq, Eq, zeroize::Zeroize, zeroize::ZeroizeOnDrop)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// The secret bytes; callers must not log or return them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// `n` bytes from the operating system's CSPRNG.
///
/// # Panics
/// Never in practice: the system generator only fails when the OS has no
/// entropy source at all, and then no key could be made either.
#[allow(clippy::expect_used)]
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random number generator failed");
    buf
}

/// A random identifier of 128 bits, base64url (22 characters).
pub fn random_id() -> String {
    crate::b64url_encode(random_bytes(16))
}

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
