//! Properties of request conversion over arbitrary requests: never a panic;
//! every refusal is INVALID_ARGUMENT with a `BadRequest` naming a field of
//! the request; everything accepted satisfies the documented bounds.

use super::*;
use proptest::prelude::*;
use tessera_domain::issue::is_disguising;
use tonic::Code;
use tonic_types::StatusExt;

/// Text that is sometimes valid and often hostile: control and format
/// characters, separators, non-ASCII, and sizes around the bounds.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9:._-]{1,20}",
        2 => "[a-z]{0,4}[\u{0}-\u{1f}\u{7f}\u{85}\u{ad}\u{200b}-\u{200f}\u{202a}-\u{202e}\u{2028}\u{2066}-\u{2069}\u{feff}][a-z]{0,4}",
        2 => "\\PC{0,40}",
        1 => prop::collection::vec(any::<char>(), 0..40).prop_map(String::from_iter),
        1 => (250usize..260).prop_map(|n| "a".repeat(n)),
    ]
}

fn enum_value() -> impl Strategy<Value = i32> {
    prop_oneof![3 => -1..5i32, 1 => any::<i32>()]
}

fn proto_value() -> impl Strategy<Value = prost_types::Value> {
    use prost_types::value::Kind;
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        text().prop_map(Kind::StringValue),
    ];
    leaf.prop_map(|k| prost_types::Value { kind: Some(k) })
        .prop_recursive(2, 12, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(|values| {
                    prost_types::Value {
                        kind: Some(Kind::ListValue(prost_types::ListValue { values })),
                    }
                }),
                prop::collection::btree_map(text(), inner, 0..3).prop_map(|m| {
                    prost_types::Value {
                        kind: Some(Kind::StructValue(prost_types::Struct {
                            fields: m.into_iter().collect(),
                        })),
                    }
                }),
            ]
        })
}

fn claim_name() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("tenant".to_owned()),
        1 => prop::sample::select(vec!["sub", "iss", "Exp", "kid", "typ", "cnf", "email"])
            .prop_map(str::to_owned),
        1 => text(),
    ]
}

/// The field a refusal names (the first field violation).
fn refused_field(s: &Status) -> Option<String> {
    (s.code() == Code::InvalidArgument)
        .then(|| s.get_error_details().bad_request().cloned())
        .flatten()
        .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
}

fn clean(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && !s.chars().any(is_disguising)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn verify_requests_parse_or_name_their_field(
        token in prop_oneof![text(), (8190usize..8200).prop_map(|n| "a".repeat(n))],
        audience in text(),
        kind in enum_value(),
        consistency in enum_value(),
    ) {
        let r = VerifyRequest {
            token,
            expected_audience: audience,
            expected_kind: kind,
            consistency,
        };
        match verify_command(&r) {
            Ok(c) => {
                prop_assert!(!c.token.is_empty() && c.token.len() <= MAX_TOKEN_BYTES);
                prop_assert!(clean(c.audience, 255), "{:?}", c.audience);
                prop_assert!((1..=3).contains(&r.expected_kind));
                prop_assert!((1..=2).contains(&r.consistency));
                prop_assert_eq!(c.strong, r.consistency == 2);
            }
            Err(s) => {
                let field = refused_field(&s);
                prop_assert!(
                    matches!(
                        field.as_deref(),
                        Some("token" | "expected_audience" | "expected_kind" | "consistency")
                    ),
                    "{s:?}"
                );
            }
        }
    }

    #[test]
    fn issue_requests_parse_or_name_their_field(
        subject in text(),
        audience in text(),
        scopes in prop::collection::vec(text(), 0..3),
        client_id in prop_oneof![Just(String::new()), text()],
        ttl in prop::option::of((-10i64..5000, prop_oneof![Just(0i32), any::<i32>()])),
        extra in prop::option::of(prop::collection::btree_map(claim_name(), proto_value(), 0..3)),
    ) {
        let policy = Policy {
            extra_claims_allowlist: vec!["tenant".into()],
            ..Policy::default()
        };
        let r = IssueRequest {
            subject,
            audience,
            scopes,
            extra_claims: extra.map(|m| prost_types::Struct { fields: m.into_iter().collect() }),
            access_token_ttl: ttl.map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }),
            client_id,
        };
        match issue_command(r.clone(), &policy) {
            Ok(c) => {
                prop_assert!(clean(&c.subject, 255), "{:?}", c.subject);
                prop_assert!(clean(&c.audience, 255), "{:?}", c.audience);
                prop_assert!(c.client_id.as_deref().is_none_or(|id| clean(id, 255)));
                prop_assert!(c.scopes.iter().all(|s| s.bytes().all(|b| b.is_ascii_graphic())));
                prop_assert!(c.extra_claims.keys().all(|k| k == "tenant"));
                prop_assert!(c.access_ttl.is_none_or(|t| (1..=policy.access_ttl_max).contains(&t)));
            }
            Err(s) => {
                let field = refused_field(&s);
                prop_assert!(
                    matches!(
                        field.as_deref(),
                        Some("subject" | "audience" | "scopes" | "client_id" | "extra_claims" | "access_token_ttl")
                    ),
                    "{s:?}"
                );
                // The refusal never echoes the subject or audience. (An
                // extra claim's name is echoed when it is refused: skip a
                // value that is also such a name, or it would be found.)
                let names: Vec<&String> = r
                    .extra_claims
                    .iter()
                    .flat_map(|m| m.fields.keys())
                    .collect();
                for v in [&r.subject, &r.audience] {
                    let in_names = names.iter().any(|n| n.contains(v.as_str()));
                    if v.len() > 8 && !in_names {
                        prop_assert!(!s.message().contains(v.as_str()), "{s:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn every_domain_failure_has_its_own_reason() {
    use std::collections::HashSet;
    let all = [
        Failure::Malformed,
        Failure::BadSignature,
        Failure::UnknownKey,
        Failure::AlgorithmNotAllowed,
        Failure::Expired,
        Failure::NotYetValid,
        Failure::WrongIssuer,
        Failure::WrongAudience,
        Failure::WrongTokenKind,
        Failure::Revoked,
        Failure::UnsupportedHeader,
        Failure::MissingClaim,
        Failure::InvalidClaim,
    ];
    let reasons: HashSet<_> = all.iter().map(|f| verify_failure(*f)).collect();
    assert_eq!(reasons.len(), all.len());
    assert!(!reasons.contains(&v1::VerifyFailure::Unspecified));
    assert_eq!(
        verify_failure(Failure::InvalidClaim),
        v1::VerifyFailure::InvalidClaim
    );
}
