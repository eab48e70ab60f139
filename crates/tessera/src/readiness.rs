//! What an instance must have before it serves. Each part lists its checks
//! ([`crate::roles::Part::readiness`]); the health watcher
//! ([`crate::health`]) runs them all every 2 s and reduces them to three
//! findings — the store answers, the revocation view is fresh, keys are
//! loaded — from which each service's status and `/readyz`'s reasons follow.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tessera_domain::clock::Clock;
use tessera_domain::keys::KeyRing;
use tessera_domain::store::Ping;
use tessera_issuer::KeyManager;
use tessera_storage::SqlStore;

/// Which finding a check feeds: a finding holds when all its checks pass
/// (and when no part asks for it).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Finding {
    Store,
    View,
    Keys,
}

/// One condition of readiness.
pub(crate) trait ReadinessCheck: Send + Sync {
    fn finding(&self) -> Finding;
    /// Whether the condition holds now.
    fn check(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// The store answers a ping within 2 s.
pub(crate) struct StoreAnswers(pub Arc<SqlStore>);

impl ReadinessCheck for StoreAnswers {
    fn finding(&self) -> Finding {
        Finding::Store
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async {
            tokio::time::timeout(Duration::from_secs(2), self.0.ping())
                .await
                .is_ok_and(|r| r.is_ok())
        })
    }
}

/// The revocation view caught up with the store at most `max_age` seconds
/// ago. `caught_up` is the reconcile task's own record (Unix seconds).
pub(crate) struct ViewFresh {
    pub caught_up: Arc<AtomicI64>,
    pub clock: Arc<dyn Clock>,
    pub max_age: i64,
}

impl ReadinessCheck for ViewFresh {
    fn finding(&self) -> Finding {
        Finding::View
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        let age = self.clock.now() - self.caught_up.load(Ordering::Relaxed);
        Box::pin(std::future::ready(age <= self.max_age))
    }
}

/// A key set is published (learnt from the issuer, or the issuer's own).
pub(crate) struct PublishedKeys(pub Arc<KeyRing>);

impl ReadinessCheck for PublishedKeys {
    fn finding(&self) -> Finding {
        Finding::Keys
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(std::future::ready(!self.0.current().keys().is_empty()))
    }
}

/// The issuer holds a key to sign with.
pub(crate) struct SigningKey(pub Arc<KeyManager>);

impl ReadinessCheck for SigningKey {
    fn finding(&self) -> Finding {
        Finding::Keys
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(std::future::ready(self.0.signing_key().is_ok()))
    }
}

/// What one round of checks found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Findings {
    pub store_ok: bool,
    pub view_ok: bool,
    pub keys_ok: bool,
}

/// Runs every check, in order (the store first: it may take 2 s, and the
/// view's age is read after it).
pub(crate) async fn run(checks: &[Box<dyn ReadinessCheck>]) -> Findings {
    let mut found = Findings {
        store_ok: true,
        view_ok: true,
        keys_ok: true,
    };
    for check in checks {
        let ok = check.check().await;
        let finding = match check.finding() {
            Finding::Store => &mut found.store_ok,
            Finding::View => &mut found.view_ok,
            Finding::Keys => &mut found.keys_ok,
        };
        *finding &= ok;
    }
    found
}
