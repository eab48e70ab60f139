//! What the services did, for `GET /metrics` (the OpenMetrics text format,
//! which Prometheus scrapes) and for OTLP export.
//!
//! Exposition is prometheus-client's: no global registry, so each
//! application — and each of the many a test process starts — has its own.
//! Recording never takes a lock: every series is created at start and kept
//! as a handle (a prometheus-client `Counter` is an `Arc` of an atomic), so
//! counting a Verify is one relaxed add; RPC latency goes to the atomic
//! histograms of [`rpc`]. Gauges that describe state (the revocation view,
//! the signing key) are read when scraped, not kept up to date per call.

mod histogram;
pub mod rpc;
mod sample;

use sample::Scraped;
pub use sample::{Kind, Labels, Sampled};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use rpc::{Methods, RpcLatency};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tessera_domain::clock::{Clock, UnixTime};
use tessera_domain::kind::TokenKind;
use tessera_domain::revocation::MemoryRevocations;
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

/// The index of `outcome` in [`OUTCOMES`]. A match, not a search, so a new
/// failure cannot be added without a series (it does not compile).
const fn outcome_index(outcome: Option<Failure>) -> usize {
    match outcome {
        None => 0,
        Some(f) => match f {
            Failure::Malformed => 1,
            Failure::BadSignature => 2,
            Failure::UnknownKey => 3,
            Failure::AlgorithmNotAllowed => 4,
            Failure::Expired => 5,
            Failure::NotYetValid => 6,
            Failure::WrongIssuer => 7,
            Failure::WrongAudience => 8,
            Failure::WrongTokenKind => 9,
            Failure::Revoked => 10,
            Failure::UnsupportedHeader => 11,
            Failure::MissingClaim => 12,
            Failure::InvalidClaim => 13,
        },
    }
}

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

/// Why a family (a login session) was revoked.
#[derive(Debug, Clone, Copy)]
pub enum FamilyCause {
    /// Its refresh token was reused.
    Reuse,
    /// `Revoke{family_id}` (a logout).
    Family,
    /// `Revoke{subject}` (every session of the subject).
    Subject,
}

/// The kinds of token minted, as the `kind` label shows them.
const TOKEN_KINDS: [&str; 4] = ["access", "refresh", "email_verification", "password_reset"];

/// Every metric of one process.
pub struct Metrics {
    verify: [Counter; OUTCOMES.len()],
    tokens: [Counter; TOKEN_KINDS.len()],
    revoked: [Counter; 4],
    families_revoked: [Counter; 3],
    one: Single,
    counters: Arc<Vec<sample::CounterFamily>>,
    scraped: Arc<Scraped>,
    rpc: Arc<RpcLatency>,
    registry: Registry,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every series, at zero; ages are measured by `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        let mut c = sample::Counters::default();
        let verify = verify_series(&mut c);
        let (tokens, revoked, families_revoked) = labelled_series(&mut c);
        let one = Single::new(&mut c);
        let counters = Arc::new(c.into_families());
        let scraped = Arc::new(Scraped::new(clock));
        let methods = Arc::new(Methods::new(tessera_proto::FILE_DESCRIPTOR_SET));
        let rpc = Arc::new(RpcLatency::new(methods));
        // One registry: the counters and state gauges, and the latency
        // histograms; `/metrics` encodes it and the OTLP exporter reads the
        // same families (see `sample`).
        let mut registry = Registry::default();
        registry.register_collector(Box::new(sample::Collected {
            counters: counters.clone(),
            scraped: scraped.clone(),
        }));
        registry.register_collector(Box::new(rpc.clone()));
        Self {
            verify,
            tokens,
            revoked,
            families_revoked,
            one,
            counters,
            scraped,
            rpc,
            registry,
        }
    }

    /// A Verify answered with `outcome` (the hot path: one atomic add).
    pub fn verify(&self, outcome: Option<Failure>) {
        self.verify[outcome_index(outcome)].inc();
    }

    /// A revocation of `kind` was newly recorded.
    pub fn revoked(&self, kind: RevokedKind) {
        self.revoked[kind as usize].inc();
    }

    /// `n` families were newly revoked for `cause`.
    pub fn families_revoked(&self, cause: FamilyCause, n: u64) {
        self.families_revoked[cause as usize].inc_by(n);
    }

    /// A login was issued: an access and a refresh token.
    pub fn issued(&self) {
        self.one.logins.inc();
        self.tokens[0].inc();
        self.tokens[1].inc();
    }

    /// A refresh rotated a family (`replay`: inside the grace window, which
    /// hands back the same refresh token with a new access token).
    pub fn refreshed(&self, replay: bool) {
        self.one.refreshes.inc();
        self.tokens[0].inc();
        if replay {
            self.one.refresh_replays.inc();
        } else {
            self.tokens[1].inc();
        }
    }

    /// A purpose token of `kind` was minted.
    pub fn purpose_issued(&self, kind: TokenKind) {
        let i = match kind {
            TokenKind::Access => 0,
            TokenKind::EmailVerification => 2,
            TokenKind::PasswordReset => 3,
        };
        self.tokens[i].inc();
    }

    /// A refresh token was reused (its family is revoked by that); returns
    /// the total so far.
    pub fn refresh_reused(&self) -> u64 {
        self.families_revoked(FamilyCause::Reuse, 1);
        self.one.refresh_reuse.inc() + 1
    }

    /// A purpose token was redeemed.
    pub fn purpose_redeemed(&self) {
        self.one.purpose_redeemed.inc();
    }

    /// `n` revocations reached this view by the log's watermark only: their
    /// commits landed late.
    pub fn revocations_late(&self, n: u64) {
        self.one.revocations_late.inc_by(n);
    }

    /// The revocation view caught up with the store at `now` (Unix seconds).
    pub fn view_reconciled(&self, now: UnixTime) {
        self.scraped
            .view_reconciled_at
            .store(now, Ordering::Relaxed);
    }

    /// When the revocation view last caught up with the store (0: never).
    pub fn view_reconciled_at(&self) -> UnixTime {
        self.scraped.view_reconciled_at.load(Ordering::Relaxed)
    }

    /// Reports the size of `view` (the introspection role's).
    pub fn watch_view(&self, view: Arc<MemoryRevocations>) {
        let _ = self.scraped.view.set(view);
    }

    /// The key schedule as the key manager last read it: when the signing
    /// key started signing and when the next one will.
    pub fn key_schedule(&self, active_since: Option<UnixTime>, next_rotation: Option<UnixTime>) {
        let s = &self.scraped;
        s.key_active_since
            .store(active_since.unwrap_or(0), Ordering::Relaxed);
        s.key_next_rotation
            .store(next_rotation.unwrap_or(0), Ordering::Relaxed);
    }

    /// What the last health check found: whether the store answered, and
    /// each service's status (`tessera_store_up`,
    /// `tessera_service_serving`).
    pub fn health(&self, store_up: bool, services: &[(&'static str, bool)]) {
        *self
            .scraped
            .health
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sample::Health {
            store_up,
            services: services.to_vec(),
        });
    }

    /// A durable revocation whose fan-out failed (left to the reconcile).
    pub fn fanout_failed(&self) {
        self.one.fanout_failures.inc();
    }

    /// A call refused because too many were in flight.
    pub fn shed(&self) {
        self.one.shed.inc();
    }

    /// A refresh token presented by another caller than its owner.
    pub fn owner_mismatch(&self) {
        self.one.owner_mismatches.inc();
    }

    /// A key was killed.
    pub fn key_compromised(&self) {
        self.one.keys_compromised.inc();
    }

    /// The RPC latency histograms (`tessera_rpc_duration_seconds`), which
    /// the edge's observing layer fills.
    pub fn rpc(&self) -> &Arc<RpcLatency> {
        &self.rpc
    }

    /// Every counter and gauge now (not the histograms), for exporters.
    pub fn sample(&self) -> Vec<Sampled> {
        sample::sample(&self.counters, &self.scraped)
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The `tessera_verify` series, one per outcome of [`OUTCOMES`].
fn verify_series(c: &mut sample::Counters) -> [Counter; OUTCOMES.len()] {
    OUTCOMES.map(|o| {
        let result = if o.is_none() { "valid" } else { "invalid" };
        let reason = o.map_or("none", Failure::as_str);
        c.add(
            "tessera_verify",
            "Verify answers by result (valid, invalid) and reason (the VerifyFailure, or none).",
            &[("result", result), ("reason", reason)],
        )
    })
}

/// Tokens by kind, revocations by target, families revoked by cause.
fn labelled_series(c: &mut sample::Counters) -> ([Counter; 4], [Counter; 4], [Counter; 3]) {
    let tokens = TOKEN_KINDS.map(|kind| {
        c.add(
            "tessera_tokens_issued",
            "Tokens minted, by kind (an Issue mints an access and a refresh token; a Refresh an access token, and a refresh token unless it is a grace replay).",
            &[("kind", kind)],
        )
    });
    let revoked = ["token", "family", "subject", "key"].map(|target| {
        c.add(
            "tessera_revocations",
            "Revocations newly recorded by this instance's revocation service, by target.",
            &[("target", target)],
        )
    });
    let families_revoked = ["reuse", "family", "subject"].map(|cause| {
        c.add(
            "tessera_families_revoked",
            "Sessions (refresh-token families) revoked, by cause: reuse detection, Revoke{family_id}, Revoke{subject}.",
            &[("cause", cause)],
        )
    });
    (tokens, revoked, families_revoked)
}

/// The counters without labels.
struct Single {
    logins: Counter,
    refreshes: Counter,
    refresh_replays: Counter,
    refresh_reuse: Counter,
    purpose_redeemed: Counter,
    keys_compromised: Counter,
    fanout_failures: Counter,
    shed: Counter,
    owner_mismatches: Counter,
    revocations_late: Counter,
}

impl Single {
    fn new(c: &mut sample::Counters) -> Self {
        let mut one = |name, help| c.add(name, help, &[]);
        Self {
            logins: one("tessera_logins_issued", "Logins issued (Issue)."),
            refreshes: one("tessera_refreshes", "Successful refreshes."),
            refresh_replays: one(
                "tessera_refresh_grace_replays",
                "Refreshes answered from the grace window.",
            ),
            refresh_reuse: one(
                "tessera_refresh_token_reuse",
                "Refresh tokens reused: each revoked a family.",
            ),
            purpose_redeemed: one(
                "tessera_purpose_tokens_redeemed",
                "Purpose tokens redeemed.",
            ),
            keys_compromised: one("tessera_keys_compromised", "Keys killed."),
            fanout_failures: one(
                "tessera_revocation_fanout_failures",
                "Durable revocations whose fan-out failed (views catch up from the store).",
            ),
            shed: one(
                "tessera_load_shed",
                "Calls refused with RESOURCE_EXHAUSTED because too many were in flight.",
            ),
            owner_mismatches: one(
                "tessera_token_owner_mismatches",
                "Refresh and purpose tokens presented by a caller other than the one that obtained them (refused).",
            ),
            revocations_late: one(
                "tessera_revocations_late",
                "Revocations whose commit landed after the log's id cursor had given up on them (delivered by the watermark).",
            ),
        }
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests;
