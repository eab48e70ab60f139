//! How a separate introspection service learns the key set: `GetJwks` at
//! start, then the `WatchKeys` stream (reconnecting with backoff). A token
//! with an unknown `kid` triggers at most one refetch per interval, so random
//! kids cannot flood the issuer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tessera_api::client::PeerChannel;
use tessera_domain::keys::{KeyRing, KeySet, KeyState, VerifyingKey};
use tessera_domain::reconnect::Reconnect;
use tessera_domain::revocation::{MemoryRevocations, RevocationEvent};
use tessera_proto::v1::key_service_client::KeyServiceClient;
use tessera_proto::v1::{GetJwksRequest, PublicKey, WatchKeysRequest};
use tokio::sync::watch;
use tracing::Instrument as _;

/// Keeps a [`KeyRing`] equal to the issuer's published set.
pub struct KeyFollower {
    client: KeyServiceClient<PeerChannel>,
    ring: Arc<KeyRing>,
    view: Arc<MemoryRevocations>,
    min_refetch: Duration,
    last_refetch: Mutex<Option<Instant>>,
    fetches: AtomicU64,
    refetches: AtomicU64,
}

impl std::fmt::Debug for KeyFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyFollower").finish_non_exhaustive()
    }
}

fn state(s: tessera_proto::v1::KeyState) -> KeyState {
    use tessera_proto::v1::KeyState as P;
    match s {
        P::Pending => KeyState::Pending,
        P::Active => KeyState::Active,
        P::Retiring => KeyState::Retiring,
        P::Retired | P::Unspecified => KeyState::Retired,
        P::Compromised => KeyState::Compromised,
    }
}

impl KeyFollower {
    /// A follower of the issuer behind `client`, filling `ring`; compromised
    /// kids announced on the stream go into `view` at once.
    pub fn new(
        client: KeyServiceClient<PeerChannel>,
        ring: Arc<KeyRing>,
        view: Arc<MemoryRevocations>,
        min_refetch: Duration,
    ) -> Self {
        Self {
            client,
            ring,
            view,
            min_refetch,
            last_refetch: Mutex::new(None),
            fetches: AtomicU64::new(0),
            refetches: AtomicU64::new(0),
        }
    }

    fn apply(&self, keys: &[PublicKey]) {
        let mut set = Vec::new();
        for k in keys {
            match serde_json::from_str(&k.jwk_json)
                .ok()
                .and_then(|jwk| VerifyingKey::from_jwk(jwk, state(k.state())).ok())
            {
                Some(v) => set.push(v),
                None => tracing::warn!(kid = %k.kid, "ignored an unusable published key"),
            }
        }
        self.ring.replace(KeySet::new(set));
    }

    /// Fetches the set once (`GetJwks`). In a span of its own: with trace
    /// export on, the issuer's side of the call joins it.
    #[tracing::instrument(skip_all, name = "key_set.fetch")]
    pub async fn fetch(&self) -> Result<(), tonic::Status> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let r = self
            .client
            .clone()
            .get_jwks(GetJwksRequest {})
            .await?
            .into_inner();
        self.apply(&r.keys);
        Ok(())
    }

    /// The ring it fills.
    pub fn key_ring(&self) -> &KeyRing {
        &self.ring
    }

    /// How many refetches unknown kids have started (counted when started,
    /// so the rate limit is observable without waiting).
    pub fn refetches_started(&self) -> u64 {
        self.refetches.load(Ordering::Relaxed)
    }

    /// How many times the set was fetched with `GetJwks`.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// A Verify met an unknown kid: refetch, at most once per interval, in
    /// the background (the call itself answers UNKNOWN_KEY: fail closed).
    pub fn unknown_kid(self: &Arc<Self>) {
        let mut last = self.last_refetch.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return;
        }
        *last = Some(Instant::now());
        self.refetches.fetch_add(1, Ordering::Relaxed);
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.fetch().await {
                tracing::warn!(code = ?e.code(), "refetching the key set failed");
            }
        });
    }

    /// Follows `WatchKeys` until `stop`, reconnecting with the shared
    /// jittered backoff, reset once a stream has delivered.
    pub fn follow(self: Arc<Self>, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Reconnect::default();
            loop {
                let mut delivered = false;
                let round = async {
                    let mut stream = self
                        .client
                        .clone()
                        .watch_keys(WatchKeysRequest {})
                        .await?
                        .into_inner();
                    while let Some(msg) = stream.message().await? {
                        for kid in &msg.compromised_kids {
                            self.view.apply(&RevocationEvent::Key { kid: kid.clone() });
                        }
                        self.apply(&msg.keys);
                        delivered = true;
                    }
                    Ok::<(), tonic::Status>(())
                }
                // One span per stream: the issuer's side of the call joins it.
                .instrument(tracing::info_span!("key_set.watch"));
                tokio::select! {
                    r = round => if let Err(e) = r {
                        tracing::warn!(code = ?e.code(), "key stream lost; reconnecting");
                    },
                    _ = stop.wait_for(|s| *s) => return,
                }
                if delivered {
                    backoff.reset();
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_delay()) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        })
    }
}
