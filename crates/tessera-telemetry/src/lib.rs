//! What Tessera tells its operators about itself: metrics, traces and the
//! audit trail. One reason to change: what is observed and how it is
//! exposed.
//!
//! - [`metrics`]: every series of one process in one prometheus-client
//!   registry (OpenMetrics at `/metrics`; the binary's OTLP exporter reads
//!   the same families), recorded with atomics only.
//! - [`trace`]: W3C trace context across Tessera's own calls, and the
//!   server span of a call.
//! - [`audit`]: security events as JSON lines on their own tracing target.
//!
//! Nothing here decides anything or knows a request's types: the services
//! and the edge call in (see `docs/architecture.md`, "Crates").

#![forbid(unsafe_code)]
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod audit;
pub mod metrics;
pub mod trace;

/// `t` as an RFC 3339 UTC time of whole seconds (`2030-01-01T00:00:00Z`);
/// out of range, the number itself.
pub fn rfc3339(t: tessera_domain::clock::UnixTime) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_written_as_rfc3339_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_893_456_000), "2030-01-01T00:00:00Z");
    }
}
