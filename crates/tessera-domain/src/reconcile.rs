//! Where a revocation view stands in the store's revocation log.
//!
//! Every revocation is logged with an increasing id in the transaction that
//! makes it durable, and each instance pulls what it has not seen by a
//! cursor, so its view is never more than one interval behind the store
//! whatever happens to the fan-out. Ids are drawn when a row is written but
//! become visible when its transaction commits, so a lower id can appear
//! after a higher one: an id the cursor skipped over is a *hole*, asked for
//! again on every pull until it appears or [`HOLE_LIFETIME`] passes (a
//! rolled-back transaction leaves a hole for good).

use crate::clock::UnixTime;
use std::collections::BTreeMap;

/// How long a skipped id is asked for again, seconds: longer than any
/// transaction that writes a revocation takes to commit.
pub const HOLE_LIFETIME: i64 = 30;

/// The most holes tracked; ids skipped beyond it (a jump, not a race) are
/// not chased.
const MAX_HOLES: i64 = 1024;

/// A view's position in the revocation log.
#[derive(Debug, Clone, Default)]
pub struct LogCursor {
    high: i64,
    holes: BTreeMap<i64, UnixTime>,
}

impl LogCursor {
    /// A view that has seen everything up to `high`.
    pub fn new(high: i64) -> Self {
        Self {
            high,
            holes: BTreeMap::new(),
        }
    }

    /// The highest id seen.
    pub fn high(&self) -> i64 {
        self.high
    }

    /// Ids skipped over that may still appear.
    pub fn holes(&self) -> Vec<i64> {
        self.holes.keys().copied().collect()
    }

    /// Records the ids a pull returned at `now`.
    pub fn saw(&mut self, ids: impl IntoIterator<Item = i64>, now: UnixTime) {
        for id in ids {
            self.holes.remove(&id);
            if id > self.high {
                if id - self.high <= MAX_HOLES {
                    for skipped in self.high + 1..id {
                        self.holes.insert(skipped, now);
                    }
                }
                self.high = id;
            }
        }
        self.holes.retain(|_, first| now - *first < HOLE_LIFETIME);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_ids_leave_no_holes() {
        let mut c = LogCursor::new(5);
        c.saw([6, 7, 8], 100);
        assert_eq!((c.high(), c.holes()), (8, vec![]));
    }

    #[test]
    fn a_late_commit_is_caught_and_its_hole_closed() {
        let mut c = LogCursor::new(5);
        // 7 committed before 6.
        c.saw([7], 100);
        assert_eq!((c.high(), c.holes()), (7, vec![6]));
        c.saw([6, 8], 101);
        assert_eq!((c.high(), c.holes()), (8, vec![]));
    }

    #[test]
    fn a_rolled_back_id_stops_being_asked_for() {
        let mut c = LogCursor::new(0);
        c.saw([2], 100);
        c.saw([], 100 + HOLE_LIFETIME - 1);
        assert_eq!(c.holes(), vec![1]);
        c.saw([], 100 + HOLE_LIFETIME);
        assert!(c.holes().is_empty());
    }

    #[test]
    fn a_jump_is_not_chased() {
        let mut c = LogCursor::new(0);
        c.saw([1_000_000], 100);
        assert_eq!((c.high(), c.holes().len()), (1_000_000, 0));
    }
}
