//! The callers in force: the callers file as last loaded, with a rate
//! limiter per caller that has a rate, swapped whole on a reload, and a
//! signal that it was, for what must re-check a caller admitted before
//! (open streams).

use arc_swap::ArcSwapOption;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use tessera_domain::callers::Callers;
use tokio::sync::watch;

/// The callers in force and their rate limiters. `None`: no callers file,
/// every caller admitted (loopback only, see the README).
pub struct CallerRegistry {
    current: ArcSwapOption<Registry>,
    changes: watch::Sender<u64>,
}

impl Default for CallerRegistry {
    fn default() -> Self {
        Self {
            current: ArcSwapOption::empty(),
            changes: watch::channel(0).0,
        }
    }
}

/// One callers file in force.
pub(crate) struct Registry {
    pub(crate) callers: Callers,
    pub(crate) limiters: HashMap<String, DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for CallerRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerRegistry")
            .field("callers", &self.count())
            .finish()
    }
}

impl CallerRegistry {
    /// The registry in force (`None`: no callers file).
    pub(crate) fn load(&self) -> arc_swap::Guard<Option<Arc<Registry>>> {
        self.current.load()
    }

    /// Wakes on every [`Self::replace`] (streams re-check their caller).
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Puts `callers` in force (a reload starts every rate afresh).
    pub fn replace(&self, callers: Callers) {
        let limiters = callers
            .iter()
            .filter_map(|c| {
                let rate = c.rate?;
                let per_second = NonZeroU32::new(rate.per_second)?;
                let burst = NonZeroU32::new(rate.burst)?;
                let quota = Quota::per_second(per_second).allow_burst(burst);
                Some((c.id.clone(), RateLimiter::direct(quota)))
            })
            .collect();
        self.current
            .store(Some(Arc::new(Registry { callers, limiters })));
        self.changes.send_modify(|n| *n += 1);
    }

    /// True once a callers file is in force.
    pub fn enforced(&self) -> bool {
        self.current.load().is_some()
    }

    /// How many callers the file in force names (`None`: no callers file).
    pub fn count(&self) -> Option<usize> {
        self.current.load().as_ref().map(|r| r.callers.len())
    }
}
