//! The published JWKS document: the key set's JSON, its ETag and how long
//! verifiers may cache it, built once per key-set change.

use tessera_domain::keys::KeySet;
use tessera_domain::sha256;

/// The published JWKS document with its validators.
#[derive(Debug, Clone)]
pub struct JwksDocument {
    /// `{"keys":[…]}`.
    pub json: String,
    /// A strong ETag of `json`, quoted.
    pub etag: String,
    /// Seconds a verifier may cache it.
    pub max_age: u32,
}

impl JwksDocument {
    /// The document of `set`, cacheable for `max_age` seconds.
    pub(crate) fn of(set: &KeySet, max_age: i64) -> Self {
        let json = set.jwks().to_string();
        let etag = format!(
            "\"{}\"",
            sha256(json.as_bytes())[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Self {
            json,
            etag,
            max_age: u32::try_from(max_age).unwrap_or(0),
        }
    }
}
