//! Policy: lifetimes, algorithms and skew. One value, checked once at start.

use crate::error::{DomainError, Result};
use crate::keys::Algorithm;

/// The largest token Tessera accepts, in bytes (Verify step 1, `docs/architecture.md`).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Token policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The `iss` of every token minted and the only one accepted.
    pub issuer: String,
    /// Access-token lifetime when the caller asks for none, in seconds.
    pub access_ttl_default: i64,
    /// The shortest access-token lifetime a caller may ask for, in seconds.
    pub access_ttl_min: i64,
    /// The longest access-token lifetime a caller may ask for, in seconds.
    pub access_ttl_max: i64,
    /// Tolerated clock difference between Tessera and its verifiers, seconds.
    pub clock_skew: i64,
    /// Algorithms Verify accepts. Never `none`; never a symmetric algorithm
    /// when keys are asymmetric (RFC 8725 sections 3.1 and 3.2).
    pub allowed_algorithms: Vec<Algorithm>,
    /// Names of caller-supplied claims that may be added to access tokens.
    pub extra_claims_allowlist: Vec<String>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:50051".to_owned(),
            access_ttl_default: 15 * 60,
            access_ttl_min: 1,
            access_ttl_max: 60 * 60,
            clock_skew: 30,
            allowed_algorithms: vec![
                Algorithm::Es256,
                Algorithm::EdDsa,
                Algorithm::Rs256,
                Algorithm::Ps256,
            ],
            extra_claims_allowlist: Vec::new(),
        }
    }
}

impl Policy {
    /// Checks that the policy is coherent; the error names the setting.
    pub fn validate(&self) -> Result<()> {
        if self.issuer.is_empty() {
            return Err(DomainError::field("issuer", "must not be empty"));
        }
        if !(1..=self.access_ttl_max).contains(&self.access_ttl_min)
            || !(self.access_ttl_min..=self.access_ttl_max).contains(&self.access_ttl_default)
        {
            return Err(DomainError::field(
                "access_token_ttl",
                "need 1 <= min <= default <= max",
            ));
        }
        if !(0..=300).contains(&self.clock_skew) {
            return Err(DomainError::field(
                "clock_skew",
                "must be between 0 and 300 seconds",
            ));
        }
        if self.allowed_algorithms.is_empty() {
            return Err(DomainError::field(
                "allowed_algorithms",
                "must name at least one algorithm",
            ));
        }
        self.validate_extra_claims()
    }

    /// `--extra-claims` may not name a claim Tessera sets or verifiers act
    /// on: refused at start, so a deployment never runs believing callers
    /// can set `sub` (Issue would refuse every such request anyway). Nor an
    /// empty name, nor one that could disguise itself in logs.
    fn validate_extra_claims(&self) -> Result<()> {
        for name in &self.extra_claims_allowlist {
            crate::text::check_text("extra_claims", name, 64)?;
            if crate::claims::is_reserved_claim(name) {
                return Err(DomainError::field(
                    "extra_claims",
                    format!(
                        "`{name}` is a reserved claim name (set by Tessera or read by verifiers); reserved: {}",
                        crate::claims::RESERVED_CLAIM_NAMES.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// How long after a family's (or subject's) revocation an access token it
    /// minted can still be presented: the longest lifetime plus the skew.
    pub fn family_margin(&self) -> i64 {
        self.access_ttl_max + self.clock_skew
    }

    /// The access-token lifetime for a request, checked against the bounds.
    pub fn access_ttl(&self, requested: Option<i64>) -> Result<i64> {
        match requested {
            None => Ok(self.access_ttl_default),
            Some(t) if (self.access_ttl_min..=self.access_ttl_max).contains(&t) => Ok(t),
            Some(_) => Err(DomainError::field(
                "access_token_ttl",
                format!(
                    "must be between {} and {} seconds",
                    self.access_ttl_min, self.access_ttl_max
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_claims_naming_a_reserved_claim_are_refused_at_start() {
        let with = |names: &[&str]| Policy {
            extra_claims_allowlist: names.iter().map(|n| (*n).to_owned()).collect(),
            ..Policy::default()
        };
        assert!(with(&["tenant", "org_id"]).validate().is_ok());
        for name in crate::claims::RESERVED_CLAIM_NAMES.iter().copied().chain([
            "SUB",
            "Exp",
            "",
            "ten\u{200B}ant",
            "a\nb",
        ]) {
            match with(&["tenant", name]).validate() {
                Err(DomainError::InvalidField { field, .. }) => {
                    assert_eq!(field, "extra_claims", "{name:?}");
                }
                other => panic!("{name:?}: {other:?}"),
            }
        }
        // Every claim Verify reads is among the reserved names.
        for name in crate::claims::REGISTERED_CLAIMS {
            assert!(crate::claims::is_reserved_claim(name), "{name}");
        }
    }
}
