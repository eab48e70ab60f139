//! Tests of the callers file.

use super::*;

fn file(key_hash: &str) -> String {
    format!(
        r#"
[[caller]]
id = "orders"
key_sha256 = ["{key_hash}"]
rpcs = ["Issue", "Revoke"]
audiences = ["orders-api"]
extra_claims = ["tenant"]
revoke = ["jti", "family"]
rate_per_second = 5

[[caller]]
id = "ops"
tls_names = ["ops.internal"]
keys_admin = true
"#
    )
}

#[test]
fn a_key_finds_its_caller_and_rights() {
    let (key, hash) = new_service_key();
    let callers = Callers::parse(&file(&hash)).unwrap();
    let key = std::str::from_utf8(key.expose()).unwrap();
    let c = callers.by_key(key).unwrap();
    assert_eq!(c.id, "orders");
    assert!(c.may_call("Issue") && c.may_call("Revoke") && !c.may_call("RotateKeys"));
    assert!(c.may_issue_for("orders-api") && !c.may_issue_for("billing"));
    assert!(c.may_add_claim("tenant") && !c.may_add_claim("role"));
    assert!(c.may_revoke(RevokeRight::Family) && !c.may_revoke(RevokeRight::Subject));
    assert_eq!(
        c.rate,
        Some(Rate {
            per_second: 5,
            burst: 5
        })
    );
    assert!(callers.by_key("tsk_wrong").is_none());
    assert!(callers.by_key(&key[..key.len() - 1]).is_none());
    assert_eq!(callers.access, AccessPolicy::default());
}

#[test]
fn keys_admin_grants_the_key_rpcs_and_tls_names_identify() {
    let callers = Callers::parse(&file(&"ab".repeat(32))).unwrap();
    let ops = callers
        .by_tls_name(["dns:x", "dns:ops.internal"].into_iter())
        .unwrap();
    assert_eq!(ops.id, "ops");
    assert!(KEY_ADMIN_RPCS.iter().all(|r| ops.may_call(r)));
    assert!(!ops.may_call("Issue"));
    assert!(callers.by_tls_name(["dns:orders"].into_iter()).is_none());
    // Typed: the same name as an e-mail SAN or a CN is not the DNS name.
    assert!(
        callers
            .by_tls_name(["email:ops.internal"].into_iter())
            .is_none()
    );
    assert!(
        callers
            .by_tls_name(["cn:ops.internal"].into_iter())
            .is_none()
    );
}

#[test]
fn faults_name_their_line() {
    let cases = [
        (
            "[[caller]]\nid = \"a\"\nkey_sha256 = [\"zz\"]\n",
            1,
            "64 hex",
        ),
        (
            "\n\n[[caller]]\nid = \"a\"\ntls_names = [\"a\"]\nrpcs = [\"Isue\"]\n",
            3,
            "unknown rpc",
        ),
        (
            "[[caller]]\nid = \"a\"\ntls_names = [\"a\"]\nrpcs = [\"RotateKeys\"]\n",
            1,
            "keys_admin",
        ),
        ("[[caller]]\nid = \"a\"\n", 1, "no credential"),
        (
            "[[caller]]\nid = \"a\"\ntls_names = [\"a\"]\nrevok = [\"jti\"]\n",
            4,
            "unknown field",
        ),
        (
            "[[caller]]\nid = \"a\"\ntls_names = [\"a\"]\nrevoke = [\"everything\"]\n",
            4,
            "unknown variant",
        ),
        ("[access]\nverify = \"maybe\"\n", 2, "unknown variant"),
        (
            "[[caller]]\nid = \"a\"\ntls_names = [\"a\"]\n[[caller]]\nid = \"a\"\ntls_names = [\"b\"]\n",
            4,
            "twice",
        ),
        (
            "[[caller]]\nid = \"a\"\ntls_names = [\"a\"]\nburst = 3\n",
            1,
            "needs rate_per_second",
        ),
        ("[[caller]\n", 1, ""),
    ];
    for (text, line, words) in cases {
        let e = Callers::parse(text).unwrap_err();
        assert_eq!(e.line, line, "{text:?}: {e}");
        assert!(e.message.contains(words), "{text:?}: {e}");
    }
}

#[test]
fn one_key_cannot_belong_to_two_callers() {
    let h = "cd".repeat(32);
    let text = format!(
        "[[caller]]\nid = \"a\"\nkey_sha256 = [\"{h}\"]\n[[caller]]\nid = \"b\"\nkey_sha256 = [\"{h}\"]\n"
    );
    let e = Callers::parse(&text).unwrap_err();
    assert!(e.message.contains("two callers"), "{e}");
    assert_eq!(
        e.line, 4,
        "named at the second caller's line, not line 1: {e}"
    );
}

#[test]
fn debug_prints_no_hashes() {
    let callers = Callers::parse(&file(&"ef".repeat(32))).unwrap();
    assert!(!format!("{callers:?}").contains("efef"));
}

#[test]
fn tls_names_are_typed_and_given_to_one_caller() {
    let parsed = Callers::parse(
        "[[caller]]\nid = \"a\"\ntls_names = [\"uri:spiffe://corp/a\", \"cn:Team A\", \"a.internal\"]\n",
    )
    .unwrap();
    let a = |n: &str| parsed.by_tls_name([n].into_iter()).map(|c| c.id.clone());
    assert_eq!(a("uri:spiffe://corp/a").as_deref(), Some("a"));
    assert_eq!(a("cn:Team A").as_deref(), Some("a"));
    assert_eq!(
        a("dns:a.internal").as_deref(),
        Some("a"),
        "untyped is a DNS name"
    );
    assert_eq!(a("dns:spiffe://corp/a"), None);
    let e =
        Callers::parse("[[caller]]\nid = \"a\"\ntls_names = [\"spiffe://corp/a\"]\n").unwrap_err();
    assert!(e.message.contains("uri:"), "{e}");
    let twice = "[[caller]]\nid = \"a\"\ntls_names = [\"x.internal\"]\n\n\
                 [[caller]]\nid = \"b\"\ntls_names = [\"dns:x.internal\"]\n";
    let e = Callers::parse(twice).unwrap_err();
    assert_eq!(e.line, 5, "the second caller's line: {e}");
    assert!(
        e.message.contains("two callers") && e.message.contains("line 1"),
        "{e}"
    );
}

#[test]
fn redeem_grants_name_a_caller_of_the_file_and_a_kind() {
    let entry = |id: &str, extra: &str| {
        format!("[[caller]]\nid = \"{id}\"\ntls_names = [\"{id}.internal\"]\n{extra}\n")
    };
    let ok = [
        entry("account", ""),
        entry(
            "front",
            "redeem_from = [\"account/password_reset\"]\nverify_strong = true",
        ),
    ]
    .concat();
    let parsed = Callers::parse(&ok).unwrap();
    let front = parsed.iter().find(|c| c.id == "front").unwrap();
    assert!(front.may_redeem("account", TokenKind::PasswordReset));
    assert!(
        front.may_redeem("front", TokenKind::EmailVerification),
        "its own"
    );
    assert!(!front.may_redeem("account", TokenKind::EmailVerification));
    assert!(front.may_verify_strong());
    assert!(
        !parsed
            .iter()
            .any(|c| c.id == "account" && c.may_verify_strong())
    );
    for (grant, why) in [
        ("acount/password_reset", "no caller of this file"),
        ("account/reset", "<caller id>/<kind>"),
        ("account", "<caller id>/<kind>"),
        ("front/*", "<caller id>/<kind>"),
    ] {
        let text = [
            entry("account", ""),
            entry("front", &format!("redeem_from = [\"{grant}\"]")),
        ]
        .concat();
        let e = Callers::parse(&text).unwrap_err();
        assert_eq!(e.line, 5, "{grant}: {e}");
        assert!(e.message.contains(why), "{grant}: {e}");
    }
}
