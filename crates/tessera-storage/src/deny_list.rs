//! The Redis deny-list made whole again after Redis was away.
//!
//! A revocation is acknowledged once the store commits it; its publish (the
//! pub/sub message and the deny-list key a Redis-reading
//! gateway checks) runs afterwards and may fail. When one fails, or when an
//! instance starts (it cannot know what its previous run missed), the bus
//! is marked, and this task, once Redis answers, rewrites the key of every
//! revocation still in force from the store (the truth). Rewriting a
//! key that is there is harmless: it expires at the same instant.

use crate::bus::{REDIS_TIMEOUT, RedisBus, redis_err};
use deadpool_redis::redis;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tessera_domain::clock::{Clock, UnixTime};
use tessera_domain::error::{DomainError, Result};
use tessera_domain::revocation::RevocationEvent;
use tessera_domain::store::RevocationStore;
use tokio::sync::watch;

/// How often a marked bus tries again.
const EVERY: Duration = Duration::from_secs(1);

/// Keys written per pipelined round trip.
const BATCH: usize = 1000;

impl RedisBus {
    /// Rewrites the deny-list whenever it may be incomplete (see the
    /// module), until `shutdown` turns true.
    pub fn repair(
        &self,
        store: Arc<dyn RevocationStore>,
        clock: Arc<dyn Clock>,
        family_margin: i64,
        mut shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let bus = self.clone();
        tokio::spawn(async move {
            loop {
                if bus.missed.swap(false, Ordering::Relaxed) {
                    match bus.rewrite(&*store, clock.now(), family_margin).await {
                        Ok(n) => tracing::info!(keys = n, "deny-list rewritten from the store"),
                        Err(e) => {
                            bus.missed.store(true, Ordering::Relaxed);
                            tracing::debug!(error = %e, "deny-list not rewritten yet; retrying");
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(EVERY) => {}
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        })
    }

    /// Writes the key of every revocation in force; how many.
    async fn rewrite(
        &self,
        store: &dyn RevocationStore,
        now: UnixTime,
        family_margin: i64,
    ) -> Result<usize> {
        // A frozen Redis never answers: bounded, so the task tries again.
        tokio::time::timeout(REDIS_TIMEOUT, self.ping())
            .await
            .map_err(|_| DomainError::StoreUnavailable("redis timed out".into()))??;
        let keys = std::sync::Mutex::new(Vec::new());
        store
            .in_force(now, family_margin, &|e: &RevocationEvent| {
                if let Some(write) = self.deny_write(e, now) {
                    let mut keys = keys
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    keys.push(write);
                }
            })
            .await?;
        let keys = keys
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for chunk in keys.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for write in chunk {
                pipe.add_command(write.clone()).ignore();
            }
            let mut c = self
                .pool
                .get()
                .await
                .map_err(|_| DomainError::StoreUnavailable("redis pool unavailable".into()))?;
            let written = tokio::time::timeout(REDIS_TIMEOUT * 5, pipe.query_async::<()>(&mut c))
                .await
                .map_err(|_| DomainError::StoreUnavailable("redis timed out".into()))?;
            written.map_err(|e| redis_err(&e))?;
        }
        Ok(keys.len())
    }
}
