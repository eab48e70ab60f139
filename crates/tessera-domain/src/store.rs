//! The storage traits. The storage crate implements them for Postgres and
//! SQLite (durable truth) and Redis (deny-list with TTLs, fan-out).

use crate::clock::UnixTime;
use crate::error::Result;
use crate::keys::{Algorithm, KeyState};
use crate::purpose::{PurposeRecord, RedeemDecision, RedeemOutcome};
use crate::reconcile::{LogPage, LogQuery, LogStart};
use crate::refresh::{Decision, FamilySnapshot, RotateOutcome};
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
    /// For a pending key: when the schedule lets it sign.
    pub activates_at: Option<UnixTime>,
    /// When it started signing.
    pub activated_at: Option<UnixTime>,
    /// When it stopped signing.
    pub retiring_at: Option<UnixTime>,
    /// When it left the JWKS (retired or compromised).
    pub retired_at: Option<UnixTime>,
}

impl StoredKey {
    /// The times the schedule reasons about.
    pub fn times(&self) -> crate::schedule::KeyTimes {
        crate::schedule::KeyTimes {
            kid: self.kid.clone(),
            state: self.state,
            created_at: self.created_at,
            activates_at: self.activates_at,
            activated_at: self.activated_at,
            retiring_at: self.retiring_at,
        }
    }
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
    /// Changes the key set under the key lock, which serialises every key
    /// change across instances: `plan` sees the keys as they are once the
    /// lock is held and returns the rows to write (new keys, or existing ones
    /// with new state and times), demotions before promotions. All in one
    /// transaction. Returns the rows written.
    async fn change_keys(&self, plan: &KeyPlan<'_>) -> Result<Vec<StoredKey>>;
    /// A sealed service secret and the id of the KEK that sealed it.
    async fn load_secret(&self, name: &str) -> Result<Option<(Vec<u8>, String)>>;
    /// Stores a sealed secret: inserts it if absent (a racing instance's
    /// first one wins), or replaces it when `replace` is set (rewrap).
    async fn store_secret(
        &self,
        name: &str,
        sealed: &[u8],
        kek_id: &str,
        replace: bool,
    ) -> Result<()>;
    /// Roughly how many sessions may hold a live token signed by a key that
    /// signed since `since`: families used since then and not revoked.
    async fn sessions_used_since(&self, since: UnixTime) -> Result<u64>;
}

/// A key-change plan: the current keys in, the rows to write out.
pub type KeyPlan<'a> = dyn Fn(&[StoredKey]) -> Result<Vec<StoredKey>> + Send + Sync + 'a;

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
    /// The subject's version at login.
    pub subject_version: u64,
    /// The caller's extra claims (allowlisted at Issue): they belong to the
    /// session, so every access token a refresh mints carries them too.
    pub extra_claims: serde_json::Map<String, serde_json::Value>,
    /// The caller that obtained it (its callers-file id); `None`: no
    /// callers file, bound to no caller.
    pub owner: Option<String>,
}

/// Durable sessions: families, refresh tokens, subject versions and
/// purpose-token redemptions.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The subject's current version (0 for a subject never revoked).
    async fn subject_version(&self, subject: &str) -> Result<u64>;
    /// Opens a family with its first refresh token, atomically.
    async fn open_family(&self, family: &NewFamily) -> Result<()>;
    /// Rotates the refresh token whose SHA-256 is `presented`, in one
    /// transaction that holds the family's lock (a row lock on Postgres, the
    /// write lock on SQLite), so rotations and revocations of one family are
    /// serialised: `plan` sees the family and the token as they are once the
    /// lock is held, and the store writes exactly what its [`Decision`]
    /// says. Returns the decision's outcome, or `Unknown` (the plan unasked)
    /// when no such token is stored.
    async fn rotate(&self, presented: &[u8; 32], plan: &RotatePlan<'_>) -> Result<RotateOutcome>;
    /// Records a minted purpose token (its hash of the binding, if any).
    async fn record_purpose(
        &self,
        jti: &str,
        subject: &str,
        kind: &str,
        binding_hash: Option<[u8; 32]>,
        expires_at: UnixTime,
        owner: Option<&str>,
    ) -> Result<()>;
    /// Redeems the purpose token `jti` at most once: in one transaction that
    /// holds its row's lock (a row lock on Postgres, the write lock on
    /// SQLite), `plan` sees the stored token and the store writes exactly
    /// what its [`RedeemDecision`] says. Returns the decision's outcome, or
    /// `Unknown` (the plan unasked) when no such token is stored.
    async fn redeem_purpose(&self, jti: &str, plan: &RedeemPlan<'_>) -> Result<RedeemOutcome>;
}

/// A refresh plan: the snapshot loaded under the family's lock in, what to
/// write out (see [`crate::refresh::decide`]).
pub type RotatePlan<'a> = dyn Fn(&FamilySnapshot) -> Decision + Send + Sync + 'a;

/// A redemption plan: the stored purpose token, loaded under its lock, in;
/// what to write out (see [`crate::purpose::decide_redeem`]).
pub type RedeemPlan<'a> = dyn Fn(&PurposeRecord) -> RedeemDecision + Send + Sync + 'a;

/// Durable revocations: the truth every view is rebuilt from.
#[async_trait]
pub trait RevocationStore: Send + Sync {
    /// Denies a token id until `until`; false if it was already denied.
    async fn revoke_jti(&self, jti: &str, until: UnixTime, now: UnixTime) -> Result<bool>;
    /// Revokes a family (taking the same lock as [`SessionStore::rotate`]);
    /// `None` for an unknown family, else whether it was newly revoked and
    /// the family's absolute end.
    async fn revoke_family(
        &self,
        family_id: &str,
        now: UnixTime,
    ) -> Result<Option<(bool, UnixTime)>>;
    /// The audience a family's tokens are minted for; `None` for an
    /// unknown family (what bounds who may revoke it).
    async fn family_audience(&self, family_id: &str) -> Result<Option<String>>;
    /// Revokes every family of a subject; with `bump_version` also raises the
    /// subject's version, so every token minted before fails. Returns the
    /// subject's version after the call and how many families were revoked.
    async fn revoke_subject(
        &self,
        subject: &str,
        bump_version: bool,
        now: UnixTime,
    ) -> Result<(u64, u64)>;
    /// Where a reader of the log starts: the newest id (0 when none) and
    /// the store's snapshot, read first; a view filled after reading it is
    /// current at least up to it (see [`crate::reconcile`]).
    async fn revocation_cursor(&self) -> Result<LogStart>;
    /// One pull of the log (see [`crate::reconcile`]): revocations logged
    /// with an id above the query's or among its holes, oldest first (at
    /// most 10 000), and those of the transactions that ended since its
    /// watermark: how a view catches up from the store whatever happened
    /// to the fan-out, and however late a commit landed.
    async fn revocations_after(&self, q: &LogQuery, family_margin: i64) -> Result<LogPage>;
    /// The store's answer to step 5 (for `consistency = STRONG`).
    async fn is_revoked(&self, q: &RevocationQuery<'_>, now: UnixTime) -> Result<bool>;
    /// Hands every revocation still in force to `apply`, row by row (a view
    /// may hold millions: none is collected first), to fill a view at start;
    /// returns how many. A revoked family's entry lasts `family_margin` past
    /// its absolute end (the longest access token it can have minted, plus
    /// skew).
    async fn in_force(
        &self,
        now: UnixTime,
        family_margin: i64,
        apply: &(dyn for<'e> Fn(&'e RevocationEvent) + Send + Sync),
    ) -> Result<u64>;
}

/// Housekeeping: bounded deletes of what no longer matters.
#[async_trait]
pub trait Housekeeping: Send + Sync {
    /// Deletes up to `batch` rows of each kind that expired before `now`
    /// (families only `family_margin` after their absolute end, so a revoked
    /// family's `sid` stays denied while its access tokens could live).
    /// Returns how many rows went.
    async fn purge(&self, now: UnixTime, family_margin: i64, batch: i64) -> Result<u64>;
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
pub trait Store: KeyStore + SessionStore + RevocationStore + Housekeeping + Ping {}
impl<T: KeyStore + SessionStore + RevocationStore + Housekeeping + Ping> Store for T {}
