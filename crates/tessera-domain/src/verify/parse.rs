//! What a token's JSON may be (Verify steps 1, 2 and the claims' types):
//! objects with unique member names, a header of only the parameters
//! Tessera mints, and claims of their registered types.
//!
//! A claim that is absent ([`Failure::MissingClaim`]) and a claim that is
//! present with the wrong type or out of range ([`Failure::InvalidClaim`])
//! are different answers: the second is never a token Tessera minted, and a
//! caller debugging an integration needs to know which one it sent.

use super::Failure;
use crate::claims::{Audience, Claims, REGISTERED_CLAIMS};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// The header parameters Tessera mints (see `keys/signer.rs`): nothing
/// else is ever accepted, whatever its value. An allow-list, not a deny-list
/// of the dangerous names (`jku`, `jwk`, `x5u`, `x5c`, `crit`, `b64`, `zip`,
/// …): a parameter we do not know is one whose meaning to another verifier
/// we cannot vouch for (RFC 8725 §3.10, RFC 7515 §4.1.11).
pub(super) const MINTED_HEADERS: &[&str] = &["alg", "kid", "typ"];

/// The latest NumericDate accepted: 9999-12-31T23:59:59Z, the largest
/// `google.protobuf.Timestamp`, so every date Verify returns is one the
/// contract can carry.
pub const MAX_NUMERIC_DATE: i64 = 253_402_300_799;

/// A JSON object whose member names are unique. RFC 7515 §4 and RFC 7519 §4
/// allow a parser to keep the last of duplicate names; another verifier may
/// keep the first and read a different token from the same bytes, so we
/// reject them (Verify step 1, `docs/architecture.md`), in the header and in the payload alike.
/// Names are compared after JSON unescaping (`"s\u0075b"` is `"sub"`).
pub(super) struct StrictObject(pub(super) Vec<(String, Value)>);

impl StrictObject {
    pub(super) fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }
}

impl<'de> Deserialize<'de> for StrictObject {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrictObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictObject, A::Error> {
                let mut out: Vec<(String, Value)> = Vec::with_capacity(12);
                while let Some((k, v)) = map.next_entry::<String, Value>()? {
                    if out.iter().any(|(seen, _)| *seen == k) {
                        return Err(de::Error::custom("duplicate member name"));
                    }
                    out.push((k, v));
                }
                Ok(StrictObject(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses a JSON object with unique names; anything else is malformed.
pub(super) fn strict_object(json: &[u8]) -> Result<StrictObject, Failure> {
    serde_json::from_slice(json).map_err(|_| Failure::Malformed)
}

/// The typed claims of a payload (already known to be signed by us).
/// Checked in a fixed order, first failure wins, so one token always gets
/// one answer.
pub(super) fn claims(payload: &[u8]) -> Result<Claims, Failure> {
    claims_of(strict_object(payload)?.0)
}

/// [`claims`] of members already parsed (unique names).
pub(super) fn claims_of(members: Vec<(String, Value)>) -> Result<Claims, Failure> {
    let mut registered: [Option<Value>; REGISTERED_CLAIMS.len()] = Default::default();
    let mut extra = Map::new();
    for (name, value) in members {
        match REGISTERED_CLAIMS.iter().position(|r| *r == name) {
            Some(i) => registered[i] = Some(value),
            None => {
                extra.insert(name, value);
            }
        }
    }
    let [
        iss,
        sub,
        aud,
        exp,
        nbf,
        iat,
        jti,
        ver,
        sid,
        scope,
        client_id,
    ] = registered;
    Ok(Claims {
        iss: text(required(iss)?)?,
        sub: identifier(required(sub)?)?,
        aud: audience(required(aud)?)?,
        exp: numeric_date(&required(exp)?)?,
        nbf: numeric_date(&required(nbf)?)?,
        iat: numeric_date(&required(iat)?)?,
        jti: identifier(required(jti)?)?,
        ver: required(ver)?.as_u64().ok_or(Failure::InvalidClaim)?,
        sid: sid.map(identifier).transpose()?,
        scope: scope.map(text).transpose()?,
        client_id: client_id.map(text).transpose()?,
        extra,
    })
}

fn required(v: Option<Value>) -> Result<Value, Failure> {
    v.ok_or(Failure::MissingClaim)
}

pub(super) fn text(v: Value) -> Result<String, Failure> {
    match v {
        Value::String(s) => Ok(s),
        _ => Err(Failure::InvalidClaim),
    }
}

/// `sub`, `jti`, `sid`: non-empty strings (Tessera never mints an empty
/// one, and an empty id would match nothing it could revoke).
pub(super) fn identifier(v: Value) -> Result<String, Failure> {
    text(v).and_then(|s| {
        if s.is_empty() {
            Err(Failure::InvalidClaim)
        } else {
            Ok(s)
        }
    })
}

/// `aud`: a string or an array of strings (RFC 7519 §4.1.3).
pub(super) fn audience(v: Value) -> Result<Audience, Failure> {
    match v {
        Value::String(s) => Ok(Audience::One(s)),
        Value::Array(items) => items
            .into_iter()
            .map(text)
            .collect::<Result<_, _>>()
            .map(Audience::Many),
        _ => Err(Failure::InvalidClaim),
    }
}

/// A NumericDate: a JSON *integer* from 0 to [`MAX_NUMERIC_DATE`].
///
/// RFC 7519 §2 allows non-integer values; we do not accept them. Tessera
/// verifies only tokens it minted, and it mints whole seconds, so a
/// fraction (or the same number written `1.7e9` or `1700000000.0`) never
/// comes from us; accepting one would also need a rounding rule per claim
/// (down for `exp`, up for `nbf`) that a third-party verifier of the same
/// token might not share. Strings, huge, negative and fractional values are
/// all [`Failure::InvalidClaim`].
pub(super) fn numeric_date(v: &Value) -> Result<i64, Failure> {
    v.as_i64()
        .filter(|t| (0..=MAX_NUMERIC_DATE).contains(t))
        .ok_or(Failure::InvalidClaim)
}
