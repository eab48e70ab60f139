//! The background tasks of a running instance.

use std::sync::Arc;
use std::time::Duration;
use tessera_domain::clock::Clock;
use tessera_domain::revocation::MemoryRevocations;
use tessera_domain::store::{Housekeeping, Ping};
use tessera_issuer::KeyManager;
use tessera_storage::SqlStore;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// Sets every service's health status.
pub(crate) async fn set_all(
    health: &HealthReporter,
    services: &[&'static str],
    status: ServingStatus,
) {
    for s in services {
        health.set_service_status(*s, status).await;
    }
}

/// SERVING while the store answers, NOT_SERVING while it does not.
pub(crate) async fn watch_store(
    store: Arc<SqlStore>,
    health: HealthReporter,
    services: Vec<&'static str>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let ok = tokio::time::timeout(Duration::from_secs(2), store.ping())
            .await
            .is_ok_and(|r| r.is_ok());
        if *stop.borrow() {
            return;
        }
        if last != Some(ok) {
            let status = if ok {
                ServingStatus::Serving
            } else {
                tracing::warn!("store not answering: NOT_SERVING");
                ServingStatus::NotServing
            };
            set_all(&health, &services, status).await;
            last = Some(ok);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

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
