//! Counters of what the services did, rendered in the Prometheus text
//! format at `GET /metrics`. Plain atomics: recording is a relaxed add, so
//! the Verify hot path takes no lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use tessera_domain::verify::Failure;

/// Verify outcomes, in a fixed order: `valid`, then every failure.
const OUTCOMES: [Option<Failure>; 14] = [
    None,
    Some(Failure::Malformed),
    Some(Failure::BadSignature),
    Some(Failure::UnknownKey),
    Some(Failure::AlgorithmNotAllowed),
    Some(Failure::Expired),
    Some(Failure::NotYetValid),
    Some(Failure::WrongIssuer),
    Some(Failure::WrongAudience),
    Some(Failure::WrongTokenKind),
    Some(Failure::Revoked),
    Some(Failure::UnsupportedHeader),
    Some(Failure::MissingClaim),
    Some(Failure::InvalidClaim),
];

/// What a revocation targeted.
#[derive(Debug, Clone, Copy)]
pub enum RevokedKind {
    /// A token or jti.
    Token,
    /// A family.
    Family,
    /// A subject.
    Subject,
    /// A key.
    Key,
}

/// Every counter of one process.
#[derive(Debug, Default)]
pub struct Metrics {
    verify: [AtomicU64; OUTCOMES.len()],
    revoked: [AtomicU64; 4],
    issued: AtomicU64,
    refreshed: AtomicU64,
    refresh_replays: AtomicU64,
    refresh_reuse: AtomicU64,
    purpose_redeemed: AtomicU64,
    keys_compromised: AtomicU64,
    fanout_failures: AtomicU64,
    shed: AtomicU64,
    view_reconciled_at: AtomicI64,
}

fn bump(c: &AtomicU64) -> u64 {
    c.fetch_add(1, Ordering::Relaxed) + 1
}

impl Metrics {
    /// A Verify answered with `outcome`.
    pub fn verify(&self, outcome: Option<Failure>) {
        if let Some(i) = OUTCOMES.iter().position(|o| *o == outcome) {
            bump(&self.verify[i]);
        }
    }

    /// A revocation of `kind` was newly recorded.
    pub fn revoked(&self, kind: RevokedKind) {
        bump(&self.revoked[kind as usize]);
    }

    /// A login was issued.
    pub fn issued(&self) {
        bump(&self.issued);
    }

    /// A refresh rotated a family (`replay`: inside the grace window).
    pub fn refreshed(&self, replay: bool) {
        bump(&self.refreshed);
        if replay {
            bump(&self.refresh_replays);
        }
    }

    /// A refresh token was reused; returns the total so far.
    pub fn refresh_reused(&self) -> u64 {
        bump(&self.refresh_reuse)
    }

    /// A purpose token was redeemed.
    pub fn purpose_redeemed(&self) {
        bump(&self.purpose_redeemed);
    }

    /// The revocation view caught up with the store at `now` (Unix seconds).
    pub fn view_reconciled(&self, now: i64) {
        self.view_reconciled_at.store(now, Ordering::Relaxed);
    }

    /// When the revocation view last caught up with the store (0: never).
    pub fn view_reconciled_at(&self) -> i64 {
        self.view_reconciled_at.load(Ordering::Relaxed)
    }

    /// A durable revocation whose fan-out failed (left to the reconcile).
    pub fn fanout_failed(&self) {
        bump(&self.fanout_failures);
    }

    /// A call refused because too many were in flight.
    pub fn shed(&self) {
        bump(&self.shed);
    }

    /// A key was killed.
    pub fn key_compromised(&self) {
        bump(&self.keys_compromised);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP tessera_verify_total Verify answers by outcome.\n# TYPE tessera_verify_total counter"
        );
        for (o, c) in OUTCOMES.iter().zip(&self.verify) {
            let name = o.map_or("valid", Failure::as_str);
            let _ = writeln!(out, "tessera_verify_total{{outcome=\"{name}\"}} {}", get(c));
        }
        let _ = writeln!(
            out,
            "# HELP tessera_revocations_total Revocations newly recorded, by target.\n# TYPE tessera_revocations_total counter"
        );
        for (name, c) in ["token", "family", "subject", "key"]
            .iter()
            .zip(&self.revoked)
        {
            let _ = writeln!(
                out,
                "tessera_revocations_total{{target=\"{name}\"}} {}",
                get(c)
            );
        }
        for (name, help, c) in [
            (
                "tessera_logins_issued_total",
                "Logins issued (Issue).",
                &self.issued,
            ),
            (
                "tessera_refreshes_total",
                "Successful refreshes.",
                &self.refreshed,
            ),
            (
                "tessera_refresh_grace_replays_total",
                "Refreshes answered from the grace window.",
                &self.refresh_replays,
            ),
            (
                "tessera_refresh_token_reuse_total",
                "Refresh tokens reused: each revoked a family.",
                &self.refresh_reuse,
            ),
            (
                "tessera_purpose_tokens_redeemed_total",
                "Purpose tokens redeemed.",
                &self.purpose_redeemed,
            ),
            (
                "tessera_keys_compromised_total",
                "Keys killed.",
                &self.keys_compromised,
            ),
            (
                "tessera_revocation_fanout_failures_total",
                "Durable revocations whose fan-out failed (views catch up from the store).",
                &self.fanout_failures,
            ),
            (
                "tessera_load_shed_total",
                "Calls refused with RESOURCE_EXHAUSTED because too many were in flight.",
                &self.shed,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                get(c)
            );
        }
        let at = self.view_reconciled_at();
        if at > 0 {
            let name = "tessera_revocation_view_reconciled_timestamp_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} When the revocation view last caught up with the store (its age: time() - this).\n# TYPE {name} gauge\n{name} {at}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        m.verify(None);
        m.verify(Some(Failure::Revoked));
        m.verify(Some(Failure::Revoked));
        m.revoked(RevokedKind::Family);
        assert_eq!(m.refresh_reused(), 1);
        let text = m.render();
        assert!(text.contains("tessera_verify_total{outcome=\"valid\"} 1"));
        assert!(text.contains("tessera_verify_total{outcome=\"revoked\"} 2"));
        assert!(text.contains("tessera_revocations_total{target=\"family\"} 1"));
        assert!(text.contains("tessera_refresh_token_reuse_total 1"));
    }
}
