//! Families, refresh-token rotation, subject versions and purpose tokens.

use super::error::store_err;
use super::{Backend, SqlStore, log_revocation, to_i64, to_u64};
use async_trait::async_trait;
use serde_json::{Map, Value};
use tessera_domain::clock::UnixTime;
use tessera_domain::error::{DomainError, Result};
use tessera_domain::purpose::{PurposeRecord, RedeemDecision, RedeemOutcome};
use tessera_domain::refresh::{
    Decision, FamilyRecord, FamilySnapshot, PresentedToken, RotateOutcome,
};
use tessera_domain::store::{NewFamily, RedeemPlan, RotatePlan, SessionStore};

/// What a refresh decision reads: the presented token, its family, the
/// subject's current version and whether the token's successor is the
/// current one, in one statement.
const SNAPSHOT: &str = "SELECT f.family_id, f.subject, f.audience, f.scope, f.client_id, \
        f.idle_expires_at, f.absolute_expires_at, f.subject_version, f.revoked_at, \
        f.extra_claims, f.owner, t.generation, t.consumed_at, t.successor_hash, \
        COALESCE((SELECT v.version FROM subjects v WHERE v.subject = f.subject), 0) AS current_version, \
        CAST(CASE WHEN s.token_hash IS NOT NULL AND s.consumed_at IS NULL THEN 1 ELSE 0 END AS BIGINT) AS successor_current \
    FROM refresh_tokens t \
    JOIN families f ON f.family_id = t.family_id \
    LEFT JOIN refresh_tokens s ON s.token_hash = t.successor_hash \
    WHERE t.token_hash = $1";

/// One row of [`SNAPSHOT`], by column name.
#[derive(sqlx::FromRow)]
struct SnapshotRow {
    family_id: String,
    subject: String,
    audience: String,
    scope: String,
    client_id: String,
    idle_expires_at: i64,
    absolute_expires_at: i64,
    subject_version: i64,
    revoked_at: Option<i64>,
    extra_claims: Option<String>,
    owner: Option<String>,
    generation: i64,
    consumed_at: Option<i64>,
    successor_hash: Option<Vec<u8>>,
    current_version: i64,
    successor_current: i64,
}

impl SnapshotRow {
    fn into_snapshot(self) -> Result<FamilySnapshot> {
        let extra_claims = decode_claims(self.extra_claims.as_deref())?;
        Ok(FamilySnapshot {
            family: FamilyRecord {
                family_id: self.family_id,
                subject: self.subject,
                audience: self.audience,
                scope: self.scope,
                client_id: self.client_id,
                idle_expires_at: self.idle_expires_at,
                absolute_expires_at: self.absolute_expires_at,
                subject_version: to_u64(self.subject_version, "family's subject version")?,
                extra_claims,
                owner: self.owner,
            },
            revoked: self.revoked_at.is_some(),
            current_subject_version: to_u64(self.current_version, "subject version")?,
            presented: PresentedToken {
                generation: self.generation,
                consumed_at: self.consumed_at,
                // A stored hash of another length is a broken row, refused.
                successor_hash: self
                    .successor_hash
                    .map(|h| {
                        h.try_into().map_err(|_| {
                            DomainError::Internal("a stored successor hash is malformed".into())
                        })
                    })
                    .transpose()?,
                successor_current: self.successor_current == 1,
            },
        })
    }
}

/// A family's extra claims as stored: NULL (a family opened before they were
/// kept, or without any) is none; anything but a JSON object is a broken
/// row, refused rather than minted from.
fn decode_claims(text: Option<&str>) -> Result<Map<String, Value>> {
    match text {
        None => Ok(Map::new()),
        Some(t) => match serde_json::from_str(t) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(DomainError::Internal(
                "a family's stored extra claims are not a JSON object".into(),
            )),
        },
    }
}

/// The column value for a family's extra claims: NULL when there are none.
fn encode_claims(claims: &Map<String, Value>) -> Option<String> {
    (!claims.is_empty()).then(|| Value::Object(claims.clone()).to_string())
}

/// What a redemption decision reads: the stored binding hash and when the
/// token was redeemed (on SQLite, under the write lock the transaction took).
const PURPOSE: &str = "SELECT binding_hash, redeemed_at, owner FROM purpose_tokens WHERE jti = $1";
/// [`PURPOSE`] taking the row's lock, for Postgres. Unlike `rotate`'s, one
/// statement both locks and reads: it reads only the locked row, which after
/// a wait it sees as the other redemption left it.
const PURPOSE_FOR_UPDATE: &str =
    "SELECT binding_hash, redeemed_at, owner FROM purpose_tokens WHERE jti = $1 FOR UPDATE";

/// Writes what a refresh decision says, in the transaction that holds the
/// family's lock: nothing for a refusal or a replay.
async fn apply_rotation(
    tx: &mut sqlx::AnyConnection,
    presented: &[u8; 32],
    family_id: &str,
    decision: &Decision,
) -> Result<()> {
    match *decision {
        Decision::Rotate {
            successor,
            generation,
            at,
            idle_expires_at,
        } => {
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(successor.to_vec())
            .bind(family_id)
            .bind(generation)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
            sqlx::query(
                "UPDATE refresh_tokens SET consumed_at = $1, successor_hash = $2 WHERE token_hash = $3",
            )
            .bind(at)
            .bind(successor.to_vec())
            .bind(presented.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
            sqlx::query(
                "UPDATE families SET last_used_at = $1, idle_expires_at = $2 WHERE family_id = $3",
            )
            .bind(at)
            .bind(idle_expires_at)
            .bind(family_id)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
        }
        Decision::RevokeFamily { at } => {
            sqlx::query("UPDATE families SET revoked_at = $1 WHERE family_id = $2")
                .bind(at)
                .bind(family_id)
                .execute(&mut *tx)
                .await
                .map_err(store_err)?;
            log_revocation(tx, "family", family_id, at, at).await?;
        }
        Decision::Replay | Decision::Refuse(_) => {}
    }
    Ok(())
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn subject_version(&self, subject: &str) -> Result<u64> {
        let v: Option<i64> = sqlx::query_scalar("SELECT version FROM subjects WHERE subject = $1")
            .bind(subject)
            .fetch_optional(&self.pool)
            .await
            .map_err(store_err)?;
        v.map_or(Ok(0), |v| to_u64(v, "subject version"))
    }

    async fn open_family(&self, f: &NewFamily) -> Result<()> {
        let mut conn = self.write_conn().await?;
        let mut tx = conn.begin().await?;
        sqlx::query(
            "INSERT INTO families (family_id, subject, audience, scope, client_id, created_at, last_used_at, idle_expires_at, absolute_expires_at, subject_version, extra_claims, owner) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&f.family_id)
        .bind(&f.subject)
        .bind(&f.audience)
        .bind(&f.scope)
        .bind(&f.client_id)
        .bind(f.created_at)
        .bind(f.created_at)
        .bind(f.idle_expires_at)
        .bind(f.absolute_expires_at)
        .bind(to_i64(f.subject_version))
        .bind(encode_claims(&f.extra_claims))
        .bind(f.owner.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        sqlx::query(
            "INSERT INTO refresh_tokens (token_hash, family_id, generation, created_at) VALUES ($1, $2, 0, $3)",
        )
        .bind(f.refresh_token_hash.to_vec())
        .bind(&f.family_id)
        .bind(f.created_at)
        .execute(&mut *tx)
        .await
        .map_err(store_err)?;
        tx.commit().await.map_err(store_err)?;
        conn.ended();
        Ok(())
    }

    async fn rotate(&self, presented: &[u8; 32], plan: &RotatePlan<'_>) -> Result<RotateOutcome> {
        // The family's lock first (FOR UPDATE on Postgres, the database write
        // lock on SQLite): Revoke of a family or subject takes the same one,
        // so once a revocation returns no rotation has left a live token.
        // Concurrent presentations of one token wait their turn in memory,
        // not on pooled connections (a hot family cannot drain the pool).
        let _turn = self
            .turns
            .turn(super::turns::turn_key(presented), self.turn_wait)
            .await?;
        let mut conn = self.write_conn().await?;
        let mut tx = conn.begin().await?;
        if self.backend == Backend::Postgres {
            // A statement of its own: under READ COMMITTED, a statement that
            // waited for a row lock re-reads only the locked row, so the
            // snapshot must be read by the next statement, after the wait.
            sqlx::query(
                "SELECT f.family_id FROM families f JOIN refresh_tokens t ON t.family_id = f.family_id \
                 WHERE t.token_hash = $1 FOR UPDATE OF f",
            )
            .bind(presented.to_vec())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        }
        let row: Option<SnapshotRow> = sqlx::query_as(SNAPSHOT)
            .bind(presented.to_vec())
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        let Some(row) = row else {
            tx.rollback().await.map_err(store_err)?;
            conn.ended();
            return Ok(RotateOutcome::Unknown);
        };
        let snapshot = row.into_snapshot()?;
        let decision = plan(&snapshot);
        apply_rotation(&mut tx, presented, &snapshot.family.family_id, &decision).await?;
        tx.commit().await.map_err(store_err)?;
        conn.ended();
        Ok(decision.outcome(snapshot.family))
    }

    async fn record_purpose(
        &self,
        jti: &str,
        subject: &str,
        kind: &str,
        binding_hash: Option<[u8; 32]>,
        expires_at: UnixTime,
        owner: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO purpose_tokens (jti, subject, kind, binding_hash, expires_at, owner) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(jti)
        .bind(subject)
        .bind(kind)
        .bind(binding_hash.map(|h| h.to_vec()))
        .bind(expires_at)
        .bind(owner)
        .execute(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(())
    }

    async fn redeem_purpose(&self, jti: &str, plan: &RedeemPlan<'_>) -> Result<RedeemOutcome> {
        // The token's lock before its row is read (FOR UPDATE on Postgres,
        // the database write lock on SQLite), so no two redemptions decide
        // on the same unused row. One at a time per token in memory first.
        let _turn = self
            .turns
            .turn(super::turns::turn_key(jti.as_bytes()), self.turn_wait)
            .await?;
        let mut conn = self.write_conn().await?;
        let mut tx = conn.begin().await?;
        let select = match self.backend {
            Backend::Postgres => PURPOSE_FOR_UPDATE,
            Backend::Sqlite => PURPOSE,
        };
        let row: Option<(Option<Vec<u8>>, Option<i64>, Option<String>)> = sqlx::query_as(select)
            .bind(jti)
            .fetch_optional(&mut *tx)
            .await
            .map_err(store_err)?;
        let Some((binding_hash, redeemed_at, owner)) = row else {
            tx.rollback().await.map_err(store_err)?;
            conn.ended();
            return Ok(RedeemOutcome::Unknown);
        };
        let decision = plan(&PurposeRecord {
            binding_hash,
            redeemed_at,
            owner,
        });
        if let RedeemDecision::Consume { at } = decision {
            // Still guarded by `redeemed_at IS NULL`: single use does not
            // rest on the lock alone.
            let done = sqlx::query(
                "UPDATE purpose_tokens SET redeemed_at = $1 WHERE jti = $2 AND redeemed_at IS NULL",
            )
            .bind(at)
            .bind(jti)
            .execute(&mut *tx)
            .await
            .map_err(store_err)?;
            if done.rows_affected() != 1 {
                return Err(DomainError::Internal(
                    "a purpose token was redeemed under its lock by another".into(),
                ));
            }
        }
        tx.commit().await.map_err(store_err)?;
        conn.ended();
        Ok(decision.outcome())
    }
}

#[cfg(test)]
#[path = "sessions_tests.rs"]
mod tests;
