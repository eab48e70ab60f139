//! Where a revocation view stands in the store's revocation log.
//!
//! Every revocation is logged with an increasing id in the transaction that
//! makes it durable, and each instance pulls what it has not seen, so its
//! view is never more than one interval behind the store whatever happens
//! to the fan-out. Ids are drawn when a row is written but become visible
//! when its transaction commits, so a lower id can appear after a higher
//! one, however late its commit lands. Two lines catch it:
//!
//! 1. **The watermark (Postgres).** Each row also records its transaction's
//!    id (`xid8`). Each pull first reads the store's snapshot: every
//!    transaction below its `xmin` has ended, so the rows logged by
//!    transactions in `[watermark, xmin)` are final, and are read again and
//!    the watermark moved to `xmin` (the transactional-outbox technique).
//!    A row is thereby delivered whenever its transaction commits, with no
//!    time limit. Rows already delivered by the id cursor are recognised
//!    and not applied twice; a row the sweep delivers first was late.
//! 2. **Holes.** An id the cursor skipped over is asked for again on every
//!    pull until it appears or [`HOLE_LIFETIME`] passes: the fast path for
//!    a commit that is only a little late (and the only line on SQLite,
//!    where one writer at a time commits in id order).
//!
//! The view's age follows the watermark: a pull at `t` is *covered* once
//! the watermark passes its snapshot's `xmax`, that is once every
//! transaction that had begun by `t` has ended and been read. So a
//! revocation whose commit is in flight holds the view's age (the staleness
//! metric, readiness) from the moment it began. Only transactions that
//! have written something hold the watermark (a read-only query never
//! does), and Tessera's own are bounded by the store's statement and
//! idle-in-transaction timeouts; another writer on the same cluster that
//! holds a transaction open holds it too, which readiness then shows.

use crate::clock::UnixTime;
use crate::revocation::RevocationEvent;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// How long a skipped id is asked for again, seconds.
pub const HOLE_LIFETIME: i64 = 30;

/// The most holes tracked; ids skipped beyond it (a jump, not a race) are
/// left to the watermark.
const MAX_HOLES: i64 = 1024;

/// The most pulls waiting to be covered; past it the view's age is taken
/// from the oldest kept (older, never younger, than the truth).
const MAX_PENDING: usize = 1024;

/// The bounds of a Postgres snapshot (`pg_current_snapshot()`): every
/// transaction below `xmin` has ended; none from `xmax` on had begun.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The oldest transaction still in flight.
    pub xmin: u64,
    /// The next transaction id to be assigned.
    pub xmax: u64,
}

/// Where a reader starts: the newest logged id and (Postgres) the snapshot
/// read before it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogStart {
    /// The newest id (0 when none).
    pub high: i64,
    /// The store's snapshot, read first (`None` on SQLite).
    pub snapshot: Option<Snapshot>,
}

/// One row of the log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRow {
    /// The row's id.
    pub id: i64,
    /// The id of the transaction that wrote it (Postgres).
    pub xid: Option<u64>,
    /// What it revokes.
    pub event: RevocationEvent,
}

/// What one pull asks the store for.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Rows with a higher id…
    pub after: i64,
    /// …or one of these ids (holes).
    pub holes: Vec<i64>,
    /// With a watermark: also every row written by a transaction from it up
    /// to the snapshot's `xmin` (Postgres).
    pub watermark: Option<u64>,
}

/// What one pull returns.
#[derive(Debug, Clone, Default)]
pub struct LogPage {
    /// Rows above the cursor or among its holes, by id.
    pub rows: Vec<LogRow>,
    /// Rows of the transactions that ended between the query's watermark
    /// and the new one, by transaction id.
    pub swept: Vec<LogRow>,
    /// The new watermark (the snapshot's `xmin`, or lower when the sweep
    /// was cut short by its row limit).
    pub watermark: Option<u64>,
    /// The snapshot's `xmax`, read before the rows.
    pub xmax: Option<u64>,
}

/// What a pull brings a view.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Events to apply (or to send), each with its log id, none twice.
    pub events: Vec<(i64, RevocationEvent)>,
    /// Of those, how many the id cursor had missed (late commits).
    pub late: u64,
}

/// A view's position in the revocation log.
#[derive(Debug, Clone)]
pub struct LogCursor {
    high: i64,
    holes: BTreeMap<i64, UnixTime>,
    watermark: Option<u64>,
    /// Rows delivered whose transaction is at or above the watermark: the
    /// sweep will return them again.
    delivered: BTreeMap<i64, u64>,
    /// Rows above `high` the sweep delivered first: the id cursor will
    /// return them again.
    ahead: BTreeSet<i64>,
    /// Pulls (when, snapshot `xmax`) the watermark has not passed yet.
    pending: VecDeque<(UnixTime, u64)>,
    caught_up: UnixTime,
}

impl LogCursor {
    /// A view current (as of `now`) with everything up to `start`.
    pub fn new(start: LogStart, now: UnixTime) -> Self {
        let mut cursor = Self {
            high: start.high,
            holes: BTreeMap::new(),
            watermark: start.snapshot.map(|s| s.xmin),
            delivered: BTreeMap::new(),
            ahead: BTreeSet::new(),
            pending: VecDeque::new(),
            caught_up: now,
        };
        if let Some(s) = start.snapshot {
            cursor.pending.push_back((now, s.xmax));
        }
        cursor
    }

    /// The highest id seen.
    pub fn high(&self) -> i64 {
        self.high
    }

    /// What the next pull asks for.
    pub fn query(&self) -> LogQuery {
        LogQuery {
            after: self.high,
            holes: self.holes.keys().copied().collect(),
            watermark: self.watermark,
        }
    }

    /// Until when every revocation that has begun is applied: the view's
    /// age is `now` minus this.
    pub fn caught_up(&self) -> UnixTime {
        self.caught_up
    }

    /// Takes the rows of a pull made at `now`: what to apply, none twice.
    pub fn take(&mut self, page: LogPage, now: UnixTime) -> Delivery {
        let mut out = Delivery::default();
        for row in page.rows {
            if self.ahead.remove(&row.id) {
                continue;
            }
            if let (Some(x), Some(w)) = (row.xid, self.watermark)
                && x >= w
            {
                self.delivered.insert(row.id, x);
            }
            self.saw(row.id, now);
            out.events.push((row.id, row.event));
        }
        for row in page.swept {
            if self.delivered.remove(&row.id).is_some() {
                continue;
            }
            if row.id > self.high {
                self.ahead.insert(row.id);
            } else {
                self.holes.remove(&row.id);
                out.late += 1;
            }
            out.events.push((row.id, row.event));
        }
        self.holes.retain(|_, first| now - *first < HOLE_LIFETIME);
        self.advance(page.watermark, page.xmax, now);
        out
    }

    fn saw(&mut self, id: i64, now: UnixTime) {
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

    /// Moves the watermark, and the view's age with it.
    fn advance(&mut self, watermark: Option<u64>, xmax: Option<u64>, now: UnixTime) {
        let (Some(w), Some(xmax)) = (watermark, xmax) else {
            // SQLite: what a pull returned is all there is.
            self.caught_up = now;
            return;
        };
        self.watermark = Some(w);
        self.delivered.retain(|_, x| *x >= w);
        let high = self.high;
        self.ahead.retain(|id| *id > high);
        if self.pending.len() < MAX_PENDING {
            self.pending.push_back((now, xmax));
        }
        while let Some(&(at, x)) = self.pending.front() {
            if x > w {
                break;
            }
            self.caught_up = self.caught_up.max(at);
            self.pending.pop_front();
        }
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
