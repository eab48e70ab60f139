//! The storage traits. The storage crate implements them for Postgres and
//! SQLite (durable truth) and Redis (deny-list with TTLs, fan-out).

use crate::clock::UnixTime;
use crate::error::Result;
use crate::keys::{Algorithm, KeyState};
use crate::revocation::{RevocationEvent, RevocationQuery};
use async_trait::async_trait;

/// A key as stored: public JWK in clear, private part sealed under a KEK.
#[derive(Clone)]
pub struct StoredKey {
    /// Key id.
    pub kid: String,
    /// The key's one algorithm.
    pub algorithm: Algorithm,
    /// Lifecycle state.
    pub state: KeyState,
    /// The public JWK, JSON text.
    pub public_jwk: String,
    /// The sealed PKCS#8 private key (see [`crate::seal`]).
    pub sealed_private: Vec<u8>,
    /// Fingerprint of the KEK that sealed it.
    pub kek_id: String,
    /// When the key was created.
    pub created_at: UnixTime,
    /// When it started signing.
    pub activated_at: Option<UnixTime>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("algorithm", &self.algorithm)
            .field("state", &self.state)
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

/// Durable signing keys.
#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key, any state.
    async fn load_keys(&self) -> Result<Vec<StoredKey>>;
    /// Adds a key. If another instance created the first key concurrently the
    /// call still succeeds; callers re-read with [`KeyStore::load_keys`].
    async fn insert_key(&self, key: &StoredKey) -> Result<()>;
}

/// A new refresh-token family (one login). Holds a hash, never a token.
#[derive(Debug, Clone)]
pub struct NewFamily {
    /// Family id (`sid`).
    pub family_id: String,
    /// Subject.
    pub subject: String,
    /// Audience of its access tokens.
    pub audience: String,
    /// Scopes, space-joined.
    pub scope: String,
    /// OAuth client id, empty when none.
    pub client_id: String,
    /// SHA-256 of the first refresh token.
    pub refresh_token_hash: [u8; 32],
    /// When it was opened.
    pub created_at: UnixTime,
    /// When it ends if unused (idle timeout).
    pub idle_expires_at: UnixTime,
    /// When it ends at the latest (absolute lifetime).
    pub absolute_expires_at: UnixTime,
}

/// Durable sessions: families, refresh tokens and subject versions.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The subject's current version (0 for a subject never revoked).
    async fn subject_version(&self, subject: &str) -> Result<u64>;
    /// Opens a family with its first refresh token, atomically.
    async fn open_family(&self, family: &NewFamily) -> Result<()>;
}

/// Durable revocations: the truth every view is rebuilt from.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Records a revocation durably; returns false if it was already recorded.
    async fn record(&self, event: &RevocationEvent, now: UnixTime) -> Result<bool>;
    /// The store's answer to step 5 (for `consistency = STRONG`).
    async fn is_revoked(&self, q: &RevocationQuery<'_>, now: UnixTime) -> Result<bool>;
    /// Every revocation still in force, to fill a view at start.
    async fn in_force(&self, now: UnixTime) -> Result<Vec<RevocationEvent>>;
}

/// Carries revocations to every instance (Redis pub/sub with a TTL'd
/// deny-list in the distributed mode; nothing to do in the embedded mode).
#[async_trait]
pub trait RevocationBus: Send + Sync {
    /// Announces a revocation that is already durable.
    async fn publish(&self, event: &RevocationEvent, now: UnixTime) -> Result<()>;
}

/// Whether the store answers: gates the SERVING health status.
#[async_trait]
pub trait Ping: Send + Sync {
    /// Ok when the store answered a trivial query.
    async fn ping(&self) -> Result<()>;
}

/// Everything a durable store provides.
pub trait Store: KeyStore + SessionStore + RevocationStore + Ping {}
impl<T: KeyStore + SessionStore + RevocationStore + Ping> Store for T {}
