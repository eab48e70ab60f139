//! Every branch of the redemption decision, with no database, and its
//! properties over arbitrary stored rows.

use super::*;
use proptest::prelude::*;

const NOW: i64 = 1_000_000;

fn stored(binding: &str, redeemed_at: Option<i64>) -> PurposeRecord {
    PurposeRecord {
        binding_hash: binding_hash(binding).map(|h| h.to_vec()),
        redeemed_at,
        owner: None,
    }
}

#[test]
fn an_unused_token_with_its_binding_is_consumed_now() {
    assert_eq!(
        decide_redeem(
            &stored("a@example.com", None),
            binding_hash("a@example.com"),
            NOW
        ),
        RedeemDecision::Consume { at: NOW }
    );
    assert_eq!(
        decide_redeem(&stored("", None), None, NOW),
        RedeemDecision::Consume { at: NOW },
        "an unbound token redeems without a binding"
    );
}

#[test]
fn a_used_token_is_refused() {
    assert_eq!(
        decide_redeem(&stored("", Some(NOW - 1)), None, NOW),
        RedeemDecision::Refuse(RedeemRefused::AlreadyUsed)
    );
}

#[test]
fn the_binding_is_judged_before_single_use() {
    let used = stored("a@example.com", Some(NOW - 1));
    assert_eq!(
        decide_redeem(&used, binding_hash("b@example.com"), NOW),
        RedeemDecision::Refuse(RedeemRefused::BindingMismatch),
        "a wrong binding does not learn that the token was used"
    );
    assert_eq!(
        decide_redeem(&stored("a@example.com", None), None, NOW),
        RedeemDecision::Refuse(RedeemRefused::BindingMismatch),
        "a bound token needs its binding"
    );
    assert_eq!(
        decide_redeem(&stored("", None), binding_hash("a@example.com"), NOW),
        RedeemDecision::Refuse(RedeemRefused::BindingMismatch),
        "an unbound token takes no binding"
    );
}

#[test]
fn a_stored_hash_of_another_length_matches_nothing() {
    let mut broken = stored("a@example.com", None);
    broken.binding_hash = Some(vec![0; 31]);
    for presented in [None, binding_hash("a@example.com"), Some([0; 32])] {
        assert_eq!(
            decide_redeem(&broken, presented, NOW),
            RedeemDecision::Refuse(RedeemRefused::BindingMismatch)
        );
    }
}

#[test]
fn outcomes() {
    assert_eq!(
        RedeemDecision::Consume { at: NOW }.outcome(),
        RedeemOutcome::Redeemed
    );
    assert_eq!(
        RedeemDecision::Refuse(RedeemRefused::AlreadyUsed).outcome(),
        RedeemOutcome::AlreadyUsed
    );
    assert_eq!(
        RedeemDecision::Refuse(RedeemRefused::BindingMismatch).outcome(),
        RedeemOutcome::BindingMismatch
    );
}

/// Stored binding hashes worth telling apart: none, two real ones, and a
/// broken row of another length.
fn stored_hash() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        Just(None),
        Just(Some(vec![1; 32])),
        Just(Some(vec![2; 32])),
        Just(Some(vec![1; 31])),
    ]
}

proptest! {
    /// A token is consumed exactly when it is unused and the binding
    /// presented is the one stored, and then at `now`; a binding that
    /// differs is always a mismatch, used or not.
    #[test]
    fn consumed_iff_unused_and_bound_alike(
        stored_hash in stored_hash(),
        presented in proptest::sample::select(vec![None, Some([1u8; 32]), Some([2u8; 32])]),
        redeemed_at in proptest::option::of(0i64..NOW),
        now in NOW..NOW + 10,
    ) {
        let alike = stored_hash.as_deref() == presented.as_ref().map(|h| &h[..]);
        let record = PurposeRecord { binding_hash: stored_hash, redeemed_at, owner: None };
        let decision = decide_redeem(&record, presented, now);
        prop_assert_eq!(
            decision == (RedeemDecision::Consume { at: now }),
            alike && redeemed_at.is_none()
        );
        prop_assert_eq!(
            decision == RedeemDecision::Refuse(RedeemRefused::BindingMismatch),
            !alike
        );
    }
}

/// Callers of a file in which `front` may redeem `account-svc`'s password
/// resets (and nothing else of anyone's).
fn callers() -> crate::callers::Callers {
    let entry = |id: &str, extra: &str| {
        format!(
            "[[caller]]\nid = \"{id}\"\nkey_sha256 = [\"{}\"]\n{extra}\n",
            crate::callers::hex(&crate::sha256(id.as_bytes()))
        )
    };
    let text = [
        entry("account-svc", ""),
        entry("intruder", ""),
        entry("front", "redeem_from = [\"account-svc/password_reset\"]"),
    ]
    .concat();
    crate::callers::Callers::parse(&text).unwrap()
}

#[test]
fn a_token_issued_to_another_caller_is_refused_first() {
    let all = callers();
    let by = |id: &str| all.iter().find(|c| c.id == id).cloned().unwrap();
    let (owner, intruder, front) = (by("account-svc"), by("intruder"), by("front"));
    let reset = TokenKind::PasswordReset;
    let mut s = stored("", Some(NOW - 1));
    s.owner = Some("account-svc".into());
    // Used already, but another caller learns nothing of that.
    assert_eq!(
        decide_redeem_as(&s, None, NOW, Some(&intruder), reset),
        RedeemDecision::Refuse(RedeemRefused::OtherCaller)
    );
    assert_eq!(
        decide_redeem_as(&s, None, NOW, None, reset),
        RedeemDecision::Refuse(RedeemRefused::OtherCaller)
    );
    assert_eq!(
        decide_redeem_as(&s, None, NOW, Some(&owner), reset),
        RedeemDecision::Refuse(RedeemRefused::AlreadyUsed)
    );
    // Granted explicitly: that owner's tokens of that kind only.
    assert_eq!(
        decide_redeem_as(&s, None, NOW, Some(&front), reset),
        RedeemDecision::Refuse(RedeemRefused::AlreadyUsed)
    );
    assert_eq!(
        decide_redeem_as(&s, None, NOW, Some(&front), TokenKind::EmailVerification),
        RedeemDecision::Refuse(RedeemRefused::OtherCaller)
    );
    s.owner = Some("intruder".into());
    assert_eq!(
        decide_redeem_as(&s, None, NOW, Some(&front), reset),
        RedeemDecision::Refuse(RedeemRefused::OtherCaller)
    );
    s.owner = None;
    s.redeemed_at = None;
    assert!(matches!(
        decide_redeem_as(&s, None, NOW, Some(&intruder), reset),
        RedeemDecision::Consume { .. }
    ));
}
