//! One reconnect policy for every loop that follows a stream — the Redis
//! subscription, `WatchKeys`, the issuer at start: exponential from 100 ms to
//! 5 s with jitter (each delay is drawn from `[d, 2d)`, so instances that lost
//! the same peer do not come back in step), and back to 100 ms once a
//! connection has worked. Only the delays live here; each loop sleeps on its
//! own runtime.

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use std::time::Duration;

/// The delays before each reconnect attempt.
#[derive(Debug)]
pub struct Reconnect {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Default for Reconnect {
    /// 100 ms doubling to 5 s, jittered.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

impl Reconnect {
    /// Delays from `min` doubling to `max`, jittered, without end.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::new()
            .with_min_delay(min)
            .with_max_delay(max)
            .with_jitter()
            .without_max_times();
        Self {
            builder,
            delays: builder.build(),
            max,
        }
    }

    /// How long to wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        // Jitter may add up to one more `max`; never wait longer than twice it.
        self.delays.next().unwrap_or(self.max).min(self.max * 2)
    }

    /// A connection worked: the next failure starts from the shortest delay.
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_jittered_to_the_cap_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let mut r = Reconnect::new(min, max);
        let first: Vec<_> = (0..12).map(|_| r.next_delay()).collect();
        assert!(first[0] >= min && first[0] < min * 2, "{first:?}");
        assert!(first[3] >= min * 8, "doubles: {first:?}");
        assert!(first.iter().all(|d| *d <= max * 2), "capped: {first:?}");
        assert!(first[11] >= max, "reaches the cap: {first:?}");
        r.reset();
        let again = r.next_delay();
        assert!(again >= min && again < min * 2, "reset: {again:?}");
        // Jitter: two policies do not walk in step.
        let mut a = Reconnect::new(min, max);
        let mut b = Reconnect::new(min, max);
        let (xa, xb): (Vec<_>, Vec<_>) = (0..8).map(|_| (a.next_delay(), b.next_delay())).unzip();
        assert_ne!(xa, xb);
    }
}
