//! Access-token claims (RFC 9068 section 2.2) and the `aud` shape.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `aud`: one string or an array of strings (RFC 7519 section 4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// A single audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// True when `aud` names `expected`.
    pub fn contains(&self, expected: &str) -> bool {
        match self {
            Self::One(a) => a == expected,
            Self::Many(v) => v.iter().any(|a| a == expected),
        }
    }

    /// Every audience.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(a) => vec![a.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// The claims of every Tessera token. Registered names are fields (so a
/// duplicate of one is rejected by the parser); anything else lands in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Subject.
    pub sub: String,
    /// Audience.
    pub aud: Audience,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Not before, seconds since the epoch.
    pub nbf: i64,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Token id, unique per token.
    pub jti: String,
    /// Refresh-token family (session) id; absent on purpose tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Subject version the token was minted under.
    #[serde(default)]
    pub ver: u64,
    /// Space-separated scopes (RFC 9068 section 2.2.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The OAuth client the token was issued to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Caller claims from the allowlist.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The claims Tessera sets: the fields above, in the order Verify checks
/// them (`verify/parse.rs` destructures this array, so its order matters).
pub const REGISTERED_CLAIMS: [&str; 11] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "ver",
    "sid",
    "scope",
    "client_id",
];

/// Names a caller may never add with `extra_claims`, nor an operator allow
/// with `--extra-claims`: every claim Tessera sets, the JOSE header names
/// Tessera sets (`alg`, `kid`, `typ`: some JWT libraries merge header and
/// claims into one map, so a claim of that name could shadow the header),
/// and the claims other verifiers act on for security (RFC 7800 `cnf`,
/// RFC 8693 `act` and `may_act`, OpenID Connect `azp`, RFC 7519 `typ`/`cty`
/// nesting). A token whose meaning a caller could change this way would
/// mislead every verifier that trusts it.
pub const RESERVED_CLAIM_NAMES: [&str; 19] = reserved();

/// Beyond [`REGISTERED_CLAIMS`]: the header names and the claims other
/// verifiers act on.
const ALSO_RESERVED: [&str; 8] = ["alg", "kid", "typ", "cty", "cnf", "act", "may_act", "azp"];

/// [`REGISTERED_CLAIMS`] followed by [`ALSO_RESERVED`], built once at
/// compile time so the two lists cannot drift apart.
const fn reserved() -> [&'static str; 19] {
    let mut out = [""; 19];
    let mut i = 0;
    while i < REGISTERED_CLAIMS.len() {
        out[i] = REGISTERED_CLAIMS[i];
        i += 1;
    }
    let mut j = 0;
    while j < ALSO_RESERVED.len() {
        out[i + j] = ALSO_RESERVED[j];
        j += 1;
    }
    out
}

/// True when callers may not set a claim named `name` (case-insensitively:
/// `Sub` next to `sub` would mislead a reader of the token and of the logs).
pub fn is_reserved_claim(name: &str) -> bool {
    RESERVED_CLAIM_NAMES
        .iter()
        .any(|r| r.eq_ignore_ascii_case(name))
}
