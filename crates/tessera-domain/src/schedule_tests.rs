//! The whole rotation cycle, second by second where it matters.

use super::*;

const T0: i64 = 1_800_000_000;

fn key(kid: &str, state: KeyState, created: i64) -> KeyTimes {
    KeyTimes {
        kid: kid.into(),
        state,
        created_at: created,
        activates_at: None,
        activated_at: None,
        retiring_at: None,
    }
}

/// Applies steps the way the store does.
fn apply(keys: &mut Vec<KeyTimes>, steps: &[KeyStep], now: i64, next: &mut u32) {
    for step in steps {
        match step {
            KeyStep::CreateActive => {
                *next += 1;
                let mut k = key(&format!("k{next}"), KeyState::Active, now);
                k.activated_at = Some(now);
                keys.push(k);
            }
            KeyStep::CreatePending { activates_at } => {
                *next += 1;
                let mut k = key(&format!("k{next}"), KeyState::Pending, now);
                k.activates_at = Some(*activates_at);
                keys.push(k);
            }
            KeyStep::Activate { kid, previous } => {
                for k in keys.iter_mut() {
                    if Some(&k.kid) == previous.as_ref() {
                        k.state = KeyState::Retiring;
                        k.retiring_at = Some(now);
                    }
                    if &k.kid == kid {
                        k.state = KeyState::Active;
                        k.activated_at = Some(now);
                    }
                }
            }
            KeyStep::Retire { kid } => {
                for k in keys.iter_mut().filter(|k| &k.kid == kid) {
                    k.state = KeyState::Retired;
                }
            }
        }
    }
}

fn states(keys: &[KeyTimes]) -> Vec<(String, KeyState)> {
    keys.iter().map(|k| (k.kid.clone(), k.state)).collect()
}

#[test]
fn a_whole_rotation_cycle() {
    let s = KeySchedule::default();
    let mut keys = Vec::new();
    let mut n = 0;
    let step = |keys: &mut Vec<KeyTimes>, now, n: &mut u32| {
        let steps = due_steps(keys, &s, now);
        apply(keys, &steps, now, n);
        steps
    };
    // First start: one active key at once, its standby published behind it.
    let hand_over = T0 + s.rotation_period;
    assert_eq!(
        step(&mut keys, T0, &mut n),
        [
            KeyStep::CreateActive,
            KeyStep::CreatePending {
                activates_at: hand_over
            }
        ]
    );
    assert!(step(&mut keys, T0, &mut n).is_empty(), "idempotent");
    assert!(step(&mut keys, hand_over - 1, &mut n).is_empty());
    // At the hand-over the standby signs, the old key retires, and the
    // next standby is published.
    assert_eq!(
        step(&mut keys, hand_over, &mut n),
        [
            KeyStep::Activate {
                kid: "k2".into(),
                previous: Some("k1".into())
            },
            KeyStep::CreatePending {
                activates_at: hand_over + s.rotation_period
            }
        ]
    );
    assert_eq!(
        states(&keys),
        [
            ("k1".into(), KeyState::Retiring),
            ("k2".into(), KeyState::Active),
            ("k3".into(), KeyState::Pending)
        ]
    );
    // The old key stays published retire_after, then goes.
    assert!(step(&mut keys, hand_over + s.retire_after - 1, &mut n).is_empty());
    step(&mut keys, hand_over + s.retire_after, &mut n);
    assert_eq!(keys[0].state, KeyState::Retired);
    // The new key signed for `publish_ahead` before anything signed with it
    // could reach a verifier whose cache predates it: never.
    assert!(keys[1].activated_at.unwrap() - keys[1].created_at >= s.publish_ahead);
}

#[test]
fn on_demand_rotation_still_waits_for_caches() {
    let s = KeySchedule::default();
    let mut keys = vec![key("a", KeyState::Active, T0)];
    keys[0].activated_at = Some(T0);
    let now = T0 + 10;
    let first = rotate_now(&keys, &s, now);
    assert_eq!(
        first,
        KeyStep::CreatePending {
            activates_at: now + s.publish_ahead
        }
    );
    let mut n = 0;
    apply(&mut keys, &[first], now, &mut n);
    // Asking again brings the pending key forward, but the schedule still
    // refuses to activate it before publish_ahead has passed.
    assert!(due_steps(&keys, &s, now + s.publish_ahead - 1).is_empty());
    assert!(matches!(
        due_steps(&keys, &s, now + s.publish_ahead)[..],
        [KeyStep::Activate { .. }, KeyStep::CreatePending { .. }]
    ));
}

/// The kill path: the signing key compromised, its published standby signs
/// at once (every verifier already holds it) and a new standby is
/// published; the standby compromised, another is published at once.
#[test]
fn a_killed_key_is_replaced_by_a_key_already_published() {
    let s = KeySchedule::default();
    let mut keys = Vec::new();
    let mut n = 0;
    let steps = due_steps(&keys, &s, T0);
    apply(&mut keys, &steps, T0, &mut n);
    let now = T0 + 600;
    let mut killed = keys.clone();
    killed[0].state = KeyState::Compromised;
    assert_eq!(
        due_steps(&killed, &s, now),
        [
            KeyStep::Activate {
                kid: "k2".into(),
                previous: None
            },
            KeyStep::CreatePending {
                activates_at: now + s.rotation_period
            }
        ]
    );
    let mut standby_killed = keys;
    standby_killed[1].state = KeyState::Compromised;
    assert_eq!(
        due_steps(&standby_killed, &s, now),
        [KeyStep::CreatePending {
            activates_at: T0 + s.rotation_period
        }]
    );
}

#[test]
fn without_an_active_key_a_pending_one_signs_at_once() {
    let s = KeySchedule::default();
    let keys = vec![key("p", KeyState::Pending, T0)];
    let standby = KeyStep::CreatePending {
        activates_at: T0 + s.rotation_period,
    };
    assert_eq!(
        due_steps(&keys, &s, T0),
        [
            KeyStep::Activate {
                kid: "p".into(),
                previous: None
            },
            standby.clone()
        ]
    );
    assert_eq!(due_steps(&[], &s, T0), [KeyStep::CreateActive, standby]);
}

#[test]
fn unsafe_schedules_are_refused_by_name() {
    let longest = 24 * 3600;
    let skew = 30;
    assert!(KeySchedule::default().validate(longest, skew).is_ok());
    let cases = [
        (
            KeySchedule {
                publish_ahead: 300,
                ..Default::default()
            },
            "key_publish_ahead",
        ),
        (
            KeySchedule {
                jwks_max_age: 3600,
                ..Default::default()
            },
            "key_publish_ahead",
        ),
        (
            KeySchedule {
                retire_after: 24 * 3600,
                ..Default::default()
            },
            "key_retire_after",
        ),
        (
            KeySchedule {
                rotation_period: 3600,
                ..Default::default()
            },
            "key_rotation_period",
        ),
    ];
    for (s, field) in cases {
        match s.validate(longest, skew) {
            Err(DomainError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{s:?}"),
            other => panic!("{s:?}: {other:?}"),
        }
    }
}

/// The metrics' "seconds to the next rotation" is exactly when the schedule
/// activates the next key, before and after the next key is published, and
/// after an on-demand rotation brings it forward.
#[test]
fn next_rotation_is_when_the_schedule_activates() {
    let s = KeySchedule::default();
    let mut keys = Vec::new();
    let mut n = 0;
    let steps = due_steps(&keys, &s, T0);
    apply(&mut keys, &steps, T0, &mut n);
    assert_eq!(active_since(&keys), Some(T0));
    let due = T0 + s.rotation_period;
    assert_eq!(next_rotation(&keys, &s), Some(due));
    // The standby is published at once; the answer is its due time.
    assert!(keys.iter().any(|k| k.state == KeyState::Pending));
    let activates = |keys: &[KeyTimes], now| {
        due_steps(keys, &s, now)
            .iter()
            .any(|st| matches!(st, KeyStep::Activate { .. }))
    };
    assert!(!activates(&keys, due - 1));
    assert!(activates(&keys, due));
    let steps = due_steps(&keys, &s, due);
    apply(&mut keys, &steps, due, &mut n);
    assert_eq!(active_since(&keys), Some(due));
    assert_eq!(next_rotation(&keys, &s), Some(due + s.rotation_period));
    // On demand, the standby (published for a period) is brought forward
    // to now, as `KeyManager::rotate` does.
    let now = due + 100;
    let KeyStep::Activate { kid, .. } = rotate_now(&keys, &s, now) else {
        panic!("the standby is what an on-demand rotation activates");
    };
    for k in keys.iter_mut().filter(|k| k.kid == kid) {
        k.activates_at = Some(now);
    }
    // It signs once published for publish_ahead (it was published at `due`).
    assert_eq!(next_rotation(&keys, &s), Some(due + s.publish_ahead));
    // No key signs: nothing to count down to.
    assert_eq!(next_rotation(&[], &s), None);
    assert_eq!(active_since(&[]), None);
}
