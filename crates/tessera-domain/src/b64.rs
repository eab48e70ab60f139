//! base64url without padding, the only encoding JWS uses; and standard
//! base64, read only where an operator pastes a secret (`openssl rand -base64`).

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// Encodes bytes as base64url without padding.
pub fn b64url_encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64url without padding; `None` on any other alphabet or padding.
pub fn b64url_decode(text: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Appends the base64url (no padding) form of `bytes` to `out`.
pub fn b64url_encode_into(bytes: impl AsRef<[u8]>, out: &mut String) {
    URL_SAFE_NO_PAD.encode_string(bytes, out);
}

/// Decodes standard base64 with padding (RFC 4648 section 4), as `openssl
/// rand -base64` prints it. Never used on tokens: JWS is base64url only.
pub fn b64_standard_decode(text: impl AsRef<[u8]>) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok()
}
