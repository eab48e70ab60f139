//! The background tasks of a running instance.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tessera_domain::clock::{Clock, UnixTime};
use tessera_domain::reconcile::LogCursor;
use tessera_domain::revocation::{MemoryRevocations, RevocationEvent};
use tessera_domain::store::{Housekeeping, RevocationStore};
use tessera_issuer::KeyManager;
use tessera_storage::{REVOCATION_LOG_RETENTION, SqlStore};
use tessera_telemetry::metrics::Metrics;
use tokio::sync::watch;

/// Applies the key schedule every `every` (and picks up what other
/// instances changed).
pub(crate) fn key_ticks(
    keys: Arc<KeyManager>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if let Err(e) = keys.tick().await {
                tracing::warn!(error = %e, "key schedule tick failed; retrying");
            }
        }
    })
}

/// Once a minute: drops expired entries from the local view and the
/// verified-signature cache, and purges the
/// store in bounded batches (1000 rows of each kind per statement, repeated
/// while a batch comes back full), so neither grows without bound.
pub(crate) fn housekeeping(
    view: Arc<MemoryRevocations>,
    ring: Arc<tessera_domain::keys::KeyRing>,
    clock_skew: i64,
    store: Arc<SqlStore>,
    clock: Arc<dyn Clock>,
    family_margin: i64,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    const BATCH: i64 = 1000;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(60)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let now = clock.now();
            view.purge(now);
            ring.signatures().purge_expired(now, clock_skew);
            loop {
                match store.purge(now, family_margin, BATCH).await {
                    Ok(n) if n >= BATCH as u64 => {}
                    Ok(n) => {
                        tracing::debug!(rows = n, "housekeeping purged");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "housekeeping failed; retrying next round");
                        break;
                    }
                }
            }
        }
    })
}

/// Every `every`: pulls the revocations logged in the store since the view's
/// cursor and applies them, so a verifier's view is never more than one
/// interval behind the store (the truth) whatever happens to Redis or to a
/// notification between services. Pub/sub stays the fast path; this is one
/// indexed query that returns nothing when nothing changed.
pub(crate) struct Reconcile {
    pub store: Arc<SqlStore>,
    pub apply: Arc<dyn Fn(&RevocationEvent) + Send + Sync>,
    pub metrics: Arc<Metrics>,
    pub clock: Arc<dyn Clock>,
    pub family_margin: i64,
    pub every: Duration,
    /// When the view last caught up with the store (Unix seconds): the
    /// view's age, which readiness reads (and the metric shows).
    pub caught_up: Arc<AtomicI64>,
}

impl Reconcile {
    /// The view caught up at `now`.
    fn mark_caught_up(&self, now: UnixTime) {
        self.caught_up.store(now, Ordering::Relaxed);
        self.metrics.view_reconciled(now);
    }

    /// Runs the loop from `cursor` until `stop`.
    pub fn spawn(
        self,
        mut cursor: LogCursor,
        mut stop: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut last_ok = self.clock.now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(self.every) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                let now = self.clock.now();
                if now - last_ok > REVOCATION_LOG_RETENTION / 2 {
                    // Behind for longer than the log is sure to reach back: reload.
                    match reload(&self.store, &*self.apply, now, self.family_margin).await {
                        Ok(c) => {
                            (cursor, last_ok) = (c, now);
                            self.mark_caught_up(cursor.caught_up());
                        }
                        Err(e) => tracing::warn!(error = %e, "revocation view reload failed"),
                    }
                    continue;
                }
                match self
                    .store
                    .revocations_after(&cursor.query(), self.family_margin)
                    .await
                {
                    Ok(page) => {
                        let got = cursor.take(page, now);
                        for (_, e) in &got.events {
                            (self.apply)(e);
                        }
                        if got.late > 0 {
                            // A commit the id cursor had given up on: the
                            // watermark caught it (see reconcile.rs).
                            tracing::warn!(late = got.late, "late-committed revocations applied");
                            self.metrics.revocations_late(got.late);
                        }
                        last_ok = now;
                        self.mark_caught_up(cursor.caught_up());
                    }
                    Err(e) => tracing::warn!(error = %e, "revocation reconcile failed; retrying"),
                }
            }
        })
    }
}

/// Fills a view from everything in force, and the cursor it is current to
/// (read first, so nothing logged meanwhile is skipped).
pub(crate) async fn reload(
    store: &SqlStore,
    apply: &(dyn Fn(&RevocationEvent) + Send + Sync),
    now: UnixTime,
    family_margin: i64,
) -> tessera_domain::error::Result<LogCursor> {
    let cursor = LogCursor::new(store.revocation_cursor().await?, now);
    store.in_force(now, family_margin, apply).await?;
    Ok(cursor)
}
