//! Reading the revocation log: by id, and (Postgres) by the transactions
//! that have ended (see `tessera_domain::reconcile`).

use super::error::store_err;
use super::{Backend, SqlStore, to_u64};
use tessera_domain::error::{DomainError, Result};
use tessera_domain::reconcile::{LogPage, LogQuery, LogRow, Snapshot};
use tessera_domain::revocation::RevocationEvent;

/// The most rows one read returns (per part of a pull).
const PAGE: usize = 10_000;

/// One row as read: id, transaction id as text (Postgres), kind, target, value.
type RawRow = (i64, Option<String>, String, String, i64);

impl SqlStore {
    /// The store's current snapshot bounds (`None` on SQLite).
    pub(crate) async fn log_snapshot(&self) -> Result<Option<Snapshot>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        // xid8 is read as text: the Any driver has no type for it.
        let (xmin, xmax): (String, String) = sqlx::query_as(
            "SELECT pg_snapshot_xmin(s)::text, pg_snapshot_xmax(s)::text \
             FROM pg_current_snapshot() AS s",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(store_err)?;
        Ok(Some(Snapshot {
            xmin: xid(&xmin)?,
            xmax: xid(&xmax)?,
        }))
    }

    /// One pull: the snapshot first, then the rows by id, then the sweep of
    /// the transactions that ended since the query's watermark.
    pub(crate) async fn log_page(&self, q: &LogQuery, family_margin: i64) -> Result<LogPage> {
        let snapshot = self.log_snapshot().await?;
        let rows = self.rows_by_id(q).await?;
        let rows = decode(rows, family_margin)?;
        let (Some(s), Some(from)) = (snapshot, q.watermark) else {
            return Ok(LogPage {
                rows,
                watermark: snapshot.map(|s| s.xmin),
                xmax: snapshot.map(|s| s.xmax),
                ..LogPage::default()
            });
        };
        let mut swept = decode(self.rows_between(from, s.xmin).await?, family_margin)?;
        let mut watermark = s.xmin;
        if swept.len() >= PAGE {
            // Cut short: the watermark stops at the last transaction read,
            // whose rows are read again whole next time.
            let last = swept.last().and_then(|r| r.xid).unwrap_or(from);
            swept.retain(|r| r.xid != Some(last));
            watermark = last;
        }
        Ok(LogPage {
            rows,
            swept,
            watermark: Some(watermark),
            xmax: Some(s.xmax),
        })
    }

    async fn rows_by_id(&self, q: &LogQuery) -> Result<Vec<RawRow>> {
        // The holes are integers, written into the statement as such.
        let also = if q.holes.is_empty() {
            String::new()
        } else {
            let holes: Vec<String> = q.holes.iter().map(i64::to_string).collect();
            format!(" OR id IN ({})", holes.join(","))
        };
        let xid = match self.backend {
            Backend::Postgres => "xid::text",
            Backend::Sqlite => "CAST(NULL AS TEXT)",
        };
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, {xid}, kind, target, value FROM revocation_log \
             WHERE id > $1{also} ORDER BY id LIMIT {PAGE}"
        )))
        .bind(q.after)
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)
    }

    /// Rows written by transactions in `[from, to)` (Postgres), by
    /// transaction id.
    async fn rows_between(&self, from: u64, to: u64) -> Result<Vec<RawRow>> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT id, xid::text, kind, target, value FROM revocation_log \
             WHERE xid >= $1::text::xid8 AND xid < $2::text::xid8 ORDER BY xid, id LIMIT {PAGE}"
        )))
        .bind(from.to_string())
        .bind(to.to_string())
        .fetch_all(&self.pool)
        .await
        .map_err(store_err)
    }
}

/// A transaction id as Postgres prints it; anything else is an error.
fn xid(text: &str) -> Result<u64> {
    text.parse().map_err(|_| {
        DomainError::Internal("a transaction id read from the store is malformed".into())
    })
}

fn decode(rows: Vec<RawRow>, family_margin: i64) -> Result<Vec<LogRow>> {
    rows.into_iter()
        .map(|(id, x, kind, target, value)| {
            Ok(LogRow {
                id,
                xid: x.as_deref().map(xid).transpose()?,
                event: logged_event(&kind, target, value, family_margin)?,
            })
        })
        .collect()
}

/// The event of one log row; a row of unknown kind or with a negative
/// version is an error (fail closed), never skipped.
fn logged_event(
    kind: &str,
    target: String,
    value: i64,
    family_margin: i64,
) -> Result<RevocationEvent> {
    Ok(match kind {
        "jti" => RevocationEvent::Jti {
            jti: target,
            until: value,
        },
        "family" => RevocationEvent::Family {
            family_id: target,
            until: value + family_margin,
        },
        "subject" => RevocationEvent::Subject {
            subject: target,
            min_version: to_u64(value, "revoked subject version")?,
        },
        "key" => RevocationEvent::Key { kid: target },
        _ => {
            return Err(DomainError::Internal(
                "a revocation_log row has an unknown kind".into(),
            ));
        }
    })
}
