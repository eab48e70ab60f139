//! Refusals at the edge, summarised. A client that is refused (no
//! credential, a wrong one, a right it lacks) can be refused as fast as it
//! can send, so one audit line per refusal would let anyone flood the
//! trail. The edge only counts (one short lock); a task writes at most one
//! `caller_denied` event per (peer address, caller, RPC, reason, detail)
//! per window (1 s in the server) with the count, and a last one at
//! shutdown so nothing counted is lost. Past [`MAX_KEYS`] distinct keys in
//! one window the rest are counted together, so memory stays bounded
//! whatever the attacker varies.

use super::{UNKNOWN, Weight, emit};
use serde_json::json;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Distinct denials kept per window; the rest are counted as one.
pub const MAX_KEYS: usize = 4096;

/// One refusal, as the edge saw it. Every field is bounded: `rpc` comes
/// from the routing table (or is `other`), `detail` from the server's own
/// words.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Denial {
    /// The peer's address (its IP: ports change per connection).
    pub peer: Option<IpAddr>,
    /// The caller, when it was known but lacked the right.
    pub caller: Option<String>,
    /// The RPC's method name, or the HTTP path class.
    pub rpc: String,
    /// The `ErrorReason` name sent.
    pub reason: &'static str,
    /// What was missing or presented (never a credential).
    pub detail: String,
}

/// Refusals counted since the last summary.
#[derive(Debug, Default)]
pub struct Denials {
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    counts: HashMap<Denial, u64>,
    overflow: u64,
}

impl Denials {
    /// Counts one refusal.
    pub fn record(&self, denial: Denial) {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let full = w.counts.len() >= MAX_KEYS;
        match w.counts.get_mut(&denial) {
            Some(n) => *n += 1,
            None if full => w.overflow += 1,
            None => {
                w.counts.insert(denial, 1);
            }
        }
    }

    /// Writes one `caller_denied` event per distinct refusal counted since
    /// the last call, and starts afresh.
    pub fn flush(&self, window: Duration) {
        let w = std::mem::take(&mut *self.window.lock().unwrap_or_else(|p| p.into_inner()));
        let mut denials: Vec<_> = w.counts.into_iter().collect();
        denials.sort_by_key(|d| std::cmp::Reverse(d.1));
        for (d, count) in denials {
            let peer = d.peer.map(|p| p.to_string());
            emit(
                Weight::Alarm,
                "caller_denied",
                d.caller.as_deref().unwrap_or(UNKNOWN),
                json!({
                    "rpc": d.rpc, "reason": d.reason, "detail": d.detail,
                    "peer": peer, "count": count, "window_seconds": window.as_secs(),
                }),
            );
        }
        if w.overflow > 0 {
            let detail = format!("refusals of more than {MAX_KEYS} kinds in one window");
            emit(
                Weight::Alarm,
                "caller_denied",
                UNKNOWN,
                json!({ "rpc": "other", "reason": "various", "detail": detail, "peer": null,
                        "count": w.overflow, "window_seconds": window.as_secs() }),
            );
        }
    }

    /// Flushes every `window` until `stop` turns true, then once more.
    pub fn summarise(
        self: Arc<Self>,
        window: Duration,
        stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        super::flush_every(window, stop, move || self.flush(window))
    }

    #[cfg(test)]
    fn kinds(&self) -> (usize, u64) {
        let w = self.window.lock().unwrap();
        (w.counts.len(), w.overflow)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denial(peer: u8, rpc: &str) -> Denial {
        Denial {
            peer: Some(IpAddr::from([10, 0, 0, peer])),
            caller: None,
            rpc: rpc.into(),
            reason: "ERROR_REASON_CALLER_UNKNOWN",
            detail: "no credential".into(),
        }
    }

    #[test]
    fn repeated_refusals_are_one_entry_with_a_count() {
        let d = Denials::default();
        for _ in 0..1000 {
            d.record(denial(1, "Issue"));
        }
        d.record(denial(2, "Issue"));
        assert_eq!(d.kinds(), (2, 0));
        d.flush(Duration::from_secs(1));
        assert_eq!(d.kinds(), (0, 0), "a window starts empty");
    }

    #[test]
    fn memory_is_bounded_whatever_varies() {
        let d = Denials::default();
        for i in 0..(MAX_KEYS + 500) {
            d.record(denial(1, &format!("m{i}")));
        }
        assert_eq!(d.kinds(), (MAX_KEYS, 500));
    }
}
