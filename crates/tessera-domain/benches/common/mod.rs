//! The token every benchmark signs and verifies: a typical access token.

use tessera_domain::claims::{Audience, Claims};
use tessera_domain::policy::Policy;

/// Claims of a typical access token issued at `now`.
pub fn claims(policy: &Policy, now: i64) -> Claims {
    Claims {
        iss: policy.issuer.clone(),
        sub: "user-123".into(),
        aud: Audience::One("orders-api".into()),
        exp: now + 900,
        nbf: now,
        iat: now,
        jti: "FZZtUCA9x8Nf8E9IGsj1UQ".into(),
        sid: Some("r3PV3BLdiFATdZgdtauzww".into()),
        ver: 0,
        scope: Some("orders:read orders:write".into()),
        client_id: None,
        extra: Default::default(),
    }
}
