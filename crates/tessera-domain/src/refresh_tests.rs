//! Refresh tokens, family policy and every branch of the refresh decision,
//! with no database, and what a plan carries over arbitrary snapshots.

use super::*;
use proptest::prelude::*;

/// A decision for a presenting caller of no id (no callers file).
fn decide_as_nobody(s: &FamilySnapshot, r: &RotateRequest, scopes: &[String]) -> Decision {
    decide(s, r, scopes, None)
}

#[test]
fn successors_are_deterministic_and_secret_dependent() {
    let s1 = RefreshSecret::new(&Secret::new(vec![1; 32]));
    let s2 = RefreshSecret::new(&Secret::new(vec![2; 32]));
    let t = RefreshToken::generate();
    assert_eq!(t.successor(&s1).hash(), t.successor(&s1).hash());
    assert_ne!(t.successor(&s1).hash(), t.successor(&s2).hash());
    assert_ne!(t.successor(&s1).hash(), t.hash());
    let next = t.successor(&s1).reveal();
    assert!(RefreshToken::parse(&next).is_some(), "successors parse");
    assert!(RefreshToken::parse("short").is_none());
    assert_eq!(format!("{t:?}"), "RefreshToken([redacted])");
}

#[test]
fn family_policy_bounds() {
    assert!(FamilyPolicy::default().validate().is_ok());
    for bad in [
        FamilyPolicy {
            grace: 61,
            ..Default::default()
        },
        FamilyPolicy {
            grace: -1,
            ..Default::default()
        },
        FamilyPolicy {
            idle_timeout: 10,
            ..Default::default()
        },
        FamilyPolicy {
            absolute_lifetime: 3600,
            idle_timeout: 7200,
            grace: 0,
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

const NOW: i64 = 1_000_000;
const SUCCESSOR: [u8; 32] = [7; 32];

fn snapshot() -> FamilySnapshot {
    FamilySnapshot {
        family: FamilyRecord {
            family_id: "f".into(),
            subject: "s".into(),
            audience: "api".into(),
            scope: "read write".into(),
            client_id: String::new(),
            idle_expires_at: NOW + 100,
            absolute_expires_at: NOW + 1000,
            subject_version: 2,
            extra_claims: Default::default(),
            owner: None,
        },
        revoked: false,
        current_subject_version: 2,
        presented: PresentedToken {
            generation: 3,
            consumed_at: None,
            successor_hash: None,
            successor_current: false,
        },
    }
}

fn req(now: i64) -> RotateRequest {
    RotateRequest {
        successor: SUCCESSOR,
        policy: FamilyPolicy {
            idle_timeout: 600,
            absolute_lifetime: 3600,
            grace: 5,
        },
        now,
    }
}

/// The presented token, consumed at `at` by a rotation to `successor`.
fn consumed(at: i64, successor: [u8; 32], current: bool) -> FamilySnapshot {
    let mut s = snapshot();
    s.presented.consumed_at = Some(at);
    s.presented.successor_hash = Some(successor);
    s.presented.successor_current = current;
    s
}

fn scopes(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_current_token_rotates_and_the_idle_deadline_moves_but_not_past_the_end() {
    assert_eq!(
        decide_as_nobody(&snapshot(), &req(NOW), &[]),
        Decision::Rotate {
            successor: SUCCESSOR,
            generation: 4,
            at: NOW,
            idle_expires_at: NOW + 600
        }
    );
    let mut s = snapshot();
    s.family.idle_expires_at = NOW + 1000;
    assert_eq!(
        decide_as_nobody(&s, &req(NOW + 500), &scopes(&["read"])),
        Decision::Rotate {
            successor: SUCCESSOR,
            generation: 4,
            at: NOW + 500,
            idle_expires_at: NOW + 1000
        },
        "capped at the absolute end"
    );
}

#[test]
fn a_revoked_family_or_one_behind_its_subject_is_refused_first() {
    let mut s = consumed(NOW - 100, [9; 32], false);
    s.revoked = true;
    assert_eq!(
        decide_as_nobody(&s, &req(NOW + 5000), &[]),
        Decision::Refuse(RefusedBecause::Revoked),
        "before expiry and before reuse"
    );
    let mut s = snapshot();
    s.current_subject_version = 3;
    assert_eq!(
        decide_as_nobody(&s, &req(NOW), &[]),
        Decision::Refuse(RefusedBecause::Revoked)
    );
}

#[test]
fn lifetime_then_idle_to_the_second() {
    let s = snapshot();
    assert_eq!(
        decide_as_nobody(&s, &req(NOW + 1000), &[]),
        Decision::Refuse(RefusedBecause::LifetimeExpired)
    );
    assert_eq!(
        decide_as_nobody(&s, &req(NOW + 100), &[]),
        Decision::Refuse(RefusedBecause::IdleExpired)
    );
    assert!(matches!(
        decide_as_nobody(&s, &req(NOW + 99), &[]),
        Decision::Rotate { .. }
    ));
}

#[test]
fn scopes_must_be_granted_and_nothing_rotates_otherwise() {
    assert_eq!(
        decide_as_nobody(&snapshot(), &req(NOW), &scopes(&["read", "admin"])),
        Decision::Refuse(RefusedBecause::ScopeNotGranted)
    );
    assert!(matches!(
        decide_as_nobody(&snapshot(), &req(NOW), &scopes(&["write", "read"])),
        Decision::Rotate { .. }
    ));
}

#[test]
fn the_immediate_predecessor_replays_inside_the_grace_window_only() {
    let s = consumed(NOW - 5, SUCCESSOR, true);
    assert_eq!(decide_as_nobody(&s, &req(NOW), &[]), Decision::Replay);
    assert_eq!(
        decide_as_nobody(&s, &req(NOW + 1), &[]),
        Decision::RevokeFamily { at: NOW + 1 },
        "one second past the window"
    );
    let mut no_grace = req(NOW);
    no_grace.policy.grace = 0;
    assert_eq!(
        decide_as_nobody(&consumed(NOW, SUCCESSOR, true), &no_grace, &[]),
        Decision::RevokeFamily { at: NOW }
    );
}

#[test]
fn any_other_consumed_token_is_reuse() {
    // Its successor was itself rotated away: an older token.
    assert_eq!(
        decide_as_nobody(&consumed(NOW - 1, SUCCESSOR, false), &req(NOW), &[]),
        Decision::RevokeFamily { at: NOW }
    );
    // A successor that is not the one derived from the presented token.
    assert_eq!(
        decide_as_nobody(&consumed(NOW - 1, [8; 32], true), &req(NOW), &[]),
        Decision::RevokeFamily { at: NOW }
    );
}

#[test]
fn reuse_is_judged_before_scopes_but_a_replay_still_checks_them() {
    assert_eq!(
        decide_as_nobody(
            &consumed(NOW - 100, SUCCESSOR, false),
            &req(NOW),
            &scopes(&["admin"])
        ),
        Decision::RevokeFamily { at: NOW }
    );
    assert_eq!(
        decide_as_nobody(
            &consumed(NOW - 1, SUCCESSOR, true),
            &req(NOW),
            &scopes(&["admin"])
        ),
        Decision::Refuse(RefusedBecause::ScopeNotGranted)
    );
}

#[test]
fn outcomes_carry_the_family_as_applied() {
    let f = snapshot().family;
    let rotated = Decision::Rotate {
        successor: SUCCESSOR,
        generation: 4,
        at: NOW,
        idle_expires_at: NOW + 42,
    }
    .outcome(f.clone());
    assert!(matches!(
        rotated,
        RotateOutcome::Rotated { ref family, fresh: true } if family.idle_expires_at == NOW + 42
    ));
    assert!(matches!(
        Decision::Replay.outcome(f.clone()),
        RotateOutcome::Rotated { fresh: false, .. }
    ));
    assert!(matches!(
        Decision::RevokeFamily { at: NOW }.outcome(f.clone()),
        RotateOutcome::Reused { .. }
    ));
    assert!(matches!(
        Decision::Refuse(RefusedBecause::IdleExpired).outcome(f),
        RotateOutcome::IdleExpired
    ));
}

#[test]
fn a_family_carries_only_its_allowlisted_non_registered_claims() {
    let mut f = snapshot().family;
    assert!(f.carried_claims(&["tenant".into()]).is_empty(), "none kept");
    f.extra_claims = serde_json::json!({"tenant": "acme", "plan": "gold", "sub": "admin"})
        .as_object()
        .unwrap()
        .clone();
    let allow = ["tenant".to_owned(), "sub".to_owned()];
    let carried = f.carried_claims(&allow);
    // `plan` left the allowlist since Issue; `sub` is registered, whatever
    // the allowlist or a stored row says.
    assert_eq!(
        carried,
        *serde_json::json!({"tenant": "acme"}).as_object().unwrap()
    );
}

/// Any snapshot a store could load: live or revoked, behind its subject or
/// not, any token state, any clock.
fn any_snapshot() -> impl Strategy<Value = FamilySnapshot> {
    (
        any::<bool>(),
        0u64..3,
        0i64..1200,
        0i64..1200,
        proptest::option::of(NOW - 20..NOW + 20),
        proptest::sample::select(vec![SUCCESSOR, [8; 32]]),
        any::<bool>(),
    )
        .prop_map(|(revoked, version, idle, end, consumed, succ, current)| {
            let mut s = snapshot();
            s.revoked = revoked;
            s.current_subject_version = version + 1;
            s.family.idle_expires_at = NOW + idle;
            s.family.absolute_expires_at = NOW + end;
            s.presented.consumed_at = consumed;
            s.presented.successor_hash = consumed.map(|_| succ);
            s.presented.successor_current = consumed.is_some() && current;
            s
        })
}

proptest! {
    /// Whatever the snapshot, the plan carries everything the store writes:
    /// a rotation stores the request's successor as the next generation at
    /// `now`, never past the family's end; only the current token of a live,
    /// unexpired family rotates; a revocation is dated `now`.
    #[test]
    fn a_plan_carries_what_the_store_writes(
        s in any_snapshot(),
        at in NOW - 10..NOW + 1300,
        grace in 0i64..10,
    ) {
        let mut r = req(at);
        r.policy.grace = grace;
        match decide_as_nobody(&s, &r, &[]) {
            Decision::Rotate { successor, generation, at: when, idle_expires_at } => {
                prop_assert_eq!(successor, r.successor);
                prop_assert_eq!(generation, s.presented.generation + 1);
                prop_assert_eq!(when, at);
                prop_assert!(idle_expires_at <= s.family.absolute_expires_at);
                prop_assert!(s.presented.consumed_at.is_none());
                prop_assert!(!s.revoked && s.current_subject_version <= s.family.subject_version);
                prop_assert!(at < s.family.idle_expires_at);
            }
            Decision::RevokeFamily { at: when } => {
                prop_assert_eq!(when, at);
                prop_assert!(s.presented.consumed_at.is_some());
            }
            Decision::Replay => prop_assert!(s.presented.successor_current),
            Decision::Refuse(_) => {}
        }
    }
}

#[test]
fn another_callers_token_is_refused_before_anything_else() {
    let mut s = consumed(NOW - 1, [8; 32], true);
    s.family.owner = Some("app-a".into());
    // Consumed and outside any grace: from its owner that is reuse; from
    // another caller it is refused without being judged at all.
    assert_eq!(
        decide(&s, &req(NOW), &[], Some("app-b")),
        Decision::Refuse(RefusedBecause::OtherCaller)
    );
    assert_eq!(
        decide(&s, &req(NOW), &[], None),
        Decision::Refuse(RefusedBecause::OtherCaller)
    );
    assert!(matches!(
        decide(&s, &req(NOW), &[], Some("app-a")),
        Decision::RevokeFamily { .. }
    ));
    // A family bound to no caller is anyone's.
    s.family.owner = None;
    assert!(matches!(
        decide(&s, &req(NOW), &[], Some("app-b")),
        Decision::RevokeFamily { .. }
    ));
}
