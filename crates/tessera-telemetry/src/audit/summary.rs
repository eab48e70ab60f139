//! Failed verifications, summarised. One event per failed Verify would let
//! a flood of garbage tokens flood the audit trail too; instead Verify only
//! counts (one short lock, no allocation once a caller has been seen), and
//! a task writes at most one `verify_failures` event per caller per window
//! (10 s in the server) with the counts by failure, and a last one at
//! shutdown so nothing counted is lost.

use super::{UNKNOWN, Weight, emit};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tessera_domain::verify::Failure;
use tokio::sync::watch;

/// Failed verifications counted since the last summary, by caller.
#[derive(Debug, Default)]
pub struct VerifyFailures {
    counts: Mutex<HashMap<String, BTreeMap<&'static str, u64>>>,
}

impl VerifyFailures {
    /// Counts one failed Verify by `caller` (`None`: no authenticated
    /// caller).
    pub fn record(&self, caller: Option<&str>, failure: Failure) {
        let caller = caller.unwrap_or(UNKNOWN);
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let by_failure = match counts.get_mut(caller) {
            Some(c) => c,
            None => counts.entry(caller.to_owned()).or_default(),
        };
        *by_failure.entry(failure.as_str()).or_default() += 1;
    }

    /// Writes one `verify_failures` event per caller counted since the last
    /// call (none when nothing failed), and starts counting afresh.
    pub fn flush(&self, window: Duration) {
        let counts = std::mem::take(&mut *self.counts.lock().unwrap_or_else(|p| p.into_inner()));
        let mut callers: Vec<_> = counts.into_iter().collect();
        callers.sort();
        for (caller, by_failure) in callers {
            let total: u64 = by_failure.values().sum();
            emit(
                Weight::Alarm,
                "verify_failures",
                &caller,
                json!({
                    "window_seconds": window.as_secs(),
                    "total": total,
                    "by_failure": by_failure,
                }),
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_kept_by_caller_and_failure_until_flushed() {
        let f = VerifyFailures::default();
        for _ in 0..3 {
            f.record(Some("gateway"), Failure::BadSignature);
        }
        f.record(Some("gateway"), Failure::Expired);
        f.record(None, Failure::Malformed);
        {
            let counts = f.counts.lock().unwrap();
            assert_eq!(counts["gateway"]["bad_signature"], 3);
            assert_eq!(counts["gateway"]["expired"], 1);
            assert_eq!(counts[UNKNOWN]["malformed"], 1);
        }
        f.flush(Duration::from_secs(10));
        assert!(f.counts.lock().unwrap().is_empty(), "a window starts empty");
    }
}
