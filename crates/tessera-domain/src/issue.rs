//! Minting: turning an Issue command into claims, a family and a signed pair.

use crate::claims::{Audience, Claims, is_reserved_claim};
use crate::clock::UnixTime;
use crate::error::{DomainError, Result};
use crate::keys::{SigningKey, sign};
use crate::kind::TokenKind;
use crate::policy::Policy;
use crate::random_id;
use crate::refresh::{FamilyPolicy, RefreshToken};
use crate::store::NewFamily;
use serde_json::{Map, Value};

/// The identifier check lives in [`crate::text`]; the API, the services and
/// the CLI name it here.
pub use crate::text::{check_text, is_disguising};

/// A validated Issue request.
#[derive(Debug, Clone)]
pub struct IssueCommand {
    /// `sub`.
    pub subject: String,
    /// `aud`.
    pub audience: String,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Caller claims (already checked against the allowlist).
    pub extra_claims: Map<String, Value>,
    /// Requested lifetime in seconds; `None` for the default.
    pub access_ttl: Option<i64>,
    /// OAuth client id.
    pub client_id: Option<String>,
}

impl IssueCommand {
    /// Validates every field against the policy.
    pub fn validate(&self, policy: &Policy) -> Result<()> {
        check_text("subject", &self.subject, 255)?;
        check_text("audience", &self.audience, 255)?;
        if self.audience == "*" {
            // The callers file's wildcard, never an audience: a verifier
            // that read `aud: "*"` as a wildcard would accept the token
            // everywhere.
            return Err(DomainError::field(
                "audience",
                "`*` is no audience (it is the callers file's wildcard)",
            ));
        }
        check_scopes(&self.scopes)?;
        if let Some(c) = &self.client_id {
            check_text("client_id", c, 255)?;
        }
        for name in self.extra_claims.keys() {
            if is_reserved_claim(name) {
                return Err(DomainError::field(
                    "extra_claims",
                    format!(
                        "`{name}` is a reserved claim name (set by Tessera or read by verifiers)"
                    ),
                ));
            }
            if !policy.extra_claims_allowlist.iter().any(|a| a == name) {
                return Err(DomainError::field(
                    "extra_claims",
                    format!("`{name}` is not on the extra-claims allowlist"),
                ));
            }
        }
        // Values are scalars, lists, or objects at most three levels deep
        // whose member names are never registered claim names: an object
        // could otherwise nest `sub` or `aud` for a verifier that flattens
        // claims.
        if let Some(name) = self
            .extra_claims
            .iter()
            .find(|(_, v)| !is_plain_claim_value(v, 1))
            .map(|(n, _)| n)
        {
            return Err(DomainError::field(
                "extra_claims",
                format!(
                    "`{name}`: a value nests at most 3 levels and never names a registered claim (sub, aud, …)"
                ),
            ));
        }
        let size = serde_json::to_vec(&self.extra_claims).map_or(usize::MAX, |v| v.len());
        if size > 4096 {
            return Err(DomainError::field("extra_claims", "at most 4 KiB as JSON"));
        }
        policy.access_ttl(self.access_ttl)?;
        Ok(())
    }
}

/// A freshly minted login: the pair and the family to store before returning.
#[derive(Debug)]
pub struct Minted {
    /// The signed access token.
    pub access_token: String,
    /// Its claims.
    pub claims: Claims,
    /// The raw refresh token (returned once, never stored).
    pub refresh_token: RefreshToken,
    /// The family to persist (holds only the refresh token's hash).
    pub family: NewFamily,
}

/// The claims of an access token for a family.
#[allow(clippy::too_many_arguments)]
pub fn access_claims(
    policy: &Policy,
    subject: &str,
    audience: &str,
    scope: &str,
    client_id: &str,
    family_id: &str,
    subject_version: u64,
    ttl: i64,
    extra: Map<String, Value>,
    now: UnixTime,
) -> Claims {
    Claims {
        iss: policy.issuer.clone(),
        sub: subject.to_owned(),
        aud: Audience::One(audience.to_owned()),
        exp: now + ttl,
        nbf: now,
        iat: now,
        jti: random_id(),
        sid: Some(family_id.to_owned()),
        ver: subject_version,
        scope: (!scope.is_empty()).then(|| scope.to_owned()),
        client_id: (!client_id.is_empty()).then(|| client_id.to_owned()),
        extra,
    }
}

/// Mints a new login: claims for a new family, signed with `key`.
pub fn mint_login(
    cmd: &IssueCommand,
    policy: &Policy,
    families: &FamilyPolicy,
    key: &SigningKey,
    subject_version: u64,
    now: UnixTime,
) -> Result<Minted> {
    cmd.validate(policy)?;
    let ttl = policy.access_ttl(cmd.access_ttl)?;
    let family_id = random_id();
    let scope = cmd.scopes.join(" ");
    let client_id = cmd.client_id.clone().unwrap_or_default();
    let claims = access_claims(
        policy,
        &cmd.subject,
        &cmd.audience,
        &scope,
        &client_id,
        &family_id,
        subject_version,
        ttl,
        cmd.extra_claims.clone(),
        now,
    );
    let access_token = sign(key, TokenKind::Access, &claims)?;
    let refresh_token = RefreshToken::generate();
    let absolute = now + families.absolute_lifetime;
    let family = NewFamily {
        family_id,
        subject: cmd.subject.clone(),
        audience: cmd.audience.clone(),
        scope,
        client_id,
        refresh_token_hash: refresh_token.hash(),
        created_at: now,
        idle_expires_at: (now + families.idle_timeout).min(absolute),
        absolute_expires_at: absolute,
        subject_version,
        extra_claims: cmd.extra_claims.clone(),
        owner: None,
    };
    Ok(Minted {
        access_token,
        claims,
        refresh_token,
        family,
    })
}

/// At most 64 scopes, each an RFC 6749 §3.3 scope-token (%x21 /
/// %x23-5B / %x5D-7E) of 1 to 128 characters.
fn check_scopes(scopes: &[String]) -> Result<()> {
    if scopes.len() > 64 {
        return Err(DomainError::field("scopes", "at most 64 scopes"));
    }
    let token = |s: &String| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
    };
    if scopes.iter().all(token) {
        return Ok(());
    }
    Err(DomainError::field(
        "scopes",
        "each scope is 1 to 128 printable ASCII characters without space, quote or backslash",
    ))
}

/// A claim value in the documented shape: at most three levels deep, and
/// no object member named like a registered claim, at any depth.
fn is_plain_claim_value(v: &serde_json::Value, depth: usize) -> bool {
    use serde_json::Value as J;
    match v {
        J::Array(items) => depth < 3 && items.iter().all(|i| is_plain_claim_value(i, depth + 1)),
        J::Object(members) => {
            depth < 3
                && members
                    .iter()
                    .all(|(k, v)| !is_reserved_claim(k) && is_plain_claim_value(v, depth + 1))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_of_issue_goes_through_the_identifier_check() {
        let base = IssueCommand {
            subject: "u".into(),
            audience: "api".into(),
            scopes: vec![],
            extra_claims: Map::new(),
            access_ttl: None,
            client_id: Some("c".into()),
        };
        let policy = Policy::default();
        assert!(base.validate(&policy).is_ok());
        let bidi = "a\u{202E}b".to_owned();
        let field = |cmd: IssueCommand| match cmd.validate(&policy) {
            Err(DomainError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut c = base.clone();
        c.subject = bidi.clone();
        assert_eq!(field(c), "subject");
        let mut c = base.clone();
        c.audience = bidi.clone();
        assert_eq!(field(c), "audience");
        let mut c = base.clone();
        c.audience = "*".into();
        assert_eq!(field(c), "audience", "the wildcard is no audience");
        let mut c = base.clone();
        c.client_id = Some(bidi.clone());
        assert_eq!(field(c), "client_id");
        let mut c = base.clone();
        c.scopes = vec![bidi];
        assert_eq!(field(c), "scopes");
        let mut c = base;
        c.extra_claims.insert("Sub".into(), Value::from("x"));
        assert_eq!(field(c), "extra_claims");
    }

    #[test]
    fn extra_claim_values_nest_no_registered_claim() {
        let policy = Policy {
            extra_claims_allowlist: vec!["tenant".into()],
            ..Policy::default()
        };
        let with = |v: Value| IssueCommand {
            subject: "u".into(),
            audience: "api".into(),
            scopes: vec![],
            extra_claims: [("tenant".to_owned(), v)].into_iter().collect(),
            access_ttl: None,
            client_id: None,
        };
        let ok = serde_json::json!({"id": "t1", "regions": ["eu", "us"], "n": 3});
        assert!(with(ok).validate(&policy).is_ok());
        for bad in [
            serde_json::json!({"sub": "admin"}),
            serde_json::json!({"org": {"aud": "billing"}}),
            serde_json::json!([{"iss": "x"}]),
            serde_json::json!({"a": {"b": {"c": 1}}}),
        ] {
            let e = with(bad.clone()).validate(&policy).unwrap_err();
            assert!(
                matches!(
                    e,
                    DomainError::InvalidField {
                        field: "extra_claims",
                        ..
                    }
                ),
                "{bad}: {e:?}"
            );
        }
    }
}
