//! A latency histogram that records with three relaxed atomic adds and no
//! lock. prometheus-client's own `Histogram` takes a mutex on every
//! observation (its source says "TODO: Consider using atomics"), which the
//! Verify path must not; this one is encoded through prometheus-client's
//! encoder all the same.

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: 100 µs (a cached Verify on
/// loopback) to 10 s (the default server-side deadline).
pub const BOUNDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The same bounds in nanoseconds, so that finding a bucket compares
/// integers.
const BOUNDS_NANOS: [u64; 16] = {
    let mut out = [0u64; 16];
    let mut i = 0;
    while i < BOUNDS.len() {
        out[i] = (BOUNDS[i] * 1e9) as u64;
        i += 1;
    }
    out
};

/// Counts per bucket (not cumulative; the last is `+Inf`) and the sum.
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = BOUNDS_NANOS.partition_point(|&b| b < nanos);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes the `_sum`, `_count` and `_bucket` samples. Read without a
    /// lock, so a scrape racing an observation may see its bucket and not
    /// yet its sum: off by one call for one scrape, never lost.
    pub fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let mut buckets = [(0.0, 0u64); BOUNDS.len() + 1];
        for (i, slot) in buckets.iter_mut().enumerate() {
            let bound = BOUNDS.get(i).copied().unwrap_or(f64::INFINITY);
            *slot = (bound, self.buckets[i].load(Ordering::Relaxed));
        }
        let count = buckets.iter().map(|b| b.1).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(100)); // exactly on a bound: le="0.0001"
        h.observe(Duration::from_micros(101));
        h.observe(Duration::from_secs(11)); // +Inf
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[1].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[BOUNDS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.count(), 3);
    }
}
