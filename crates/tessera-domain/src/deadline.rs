//! The deadline of the call a task serves, so that a write whose client
//! has already been answered "outcome unknown" does not begin late.
//!
//! A call that may write runs to its end once begun (a transaction is never
//! cut in half), but one still *waiting* to begin (for its token's turn, for
//! a pooled connection, behind a frozen store) when its deadline passes is
//! abandoned at the door: had it begun later, it could act on a state the
//! client has since moved past — a Refresh of a token the client's retry
//! already rotated twice would be judged reuse and end the session.
//! Abandoning it is what its client was told might happen ("outcome
//! unknown"), and a client that sets a short deadline to slip a call past
//! a check gains nothing: a call that does not begin has no effect.

use std::future::Future;
use std::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `f` with the call deadline `at`.
pub async fn within<F: Future>(at: Instant, f: F) -> F::Output {
    DEADLINE.scope(at, f).await
}

/// Whether the deadline of the call this task serves has passed (false
/// outside any call: background work has no deadline).
pub fn passed() -> bool {
    DEADLINE
        .try_with(|at| Instant::now() >= *at)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_call_knows_when_its_deadline_has_passed() {
        assert!(!passed(), "no call, no deadline");
        let soon = Instant::now() + Duration::from_millis(20);
        within(soon, async {
            assert!(!passed());
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(passed());
        })
        .await;
        assert!(!passed());
    }
}
