//! One call at a time per token, waiting in memory.

use tessera_domain::error::{DomainError, Result};

/// One call at a time per key (a refresh token's hash, a purpose token's
/// id), waiting in memory rather than on a pooled connection: however many
/// clients press one hot family, it holds at most one connection of this
/// instance's pool, so unrelated calls keep theirs. A waiter gives up after
/// `wait` (the lock timeout) with `STORE_UNAVAILABLE`, as it would have at
/// the row lock.
#[derive(Debug, Default)]
pub(crate) struct OneAtATime {
    held: std::sync::Mutex<std::collections::HashMap<u64, std::sync::Weak<tokio::sync::Mutex<()>>>>,
}

impl OneAtATime {
    /// The turn of `key`, within `wait`.
    pub(crate) async fn turn(
        &self,
        key: u64,
        wait: std::time::Duration,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>> {
        let lock = {
            let mut held = self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if held.len() > 1024 {
                held.retain(|_, w| w.strong_count() > 0);
            }
            match held.get(&key).and_then(std::sync::Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = std::sync::Arc::new(tokio::sync::Mutex::new(()));
                    held.insert(key, std::sync::Arc::downgrade(&lock));
                    lock
                }
            }
        };
        tokio::time::timeout(wait, lock.lock_owned())
            .await
            .map_err(|_| {
                DomainError::StoreUnavailable(
                    "the token is being used by other calls; retry".into(),
                )
            })
    }
}

/// A key for [`OneAtATime`] from any bytes.
pub(crate) fn turn_key(bytes: &[u8]) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(bytes)
}
