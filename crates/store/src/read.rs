//! The store's read side and its operator records: case views, state counts, due deadlines and
//! dead letters.

use crate::audit::AuditRecord;
use crate::tx::{CaseRecord, case_columns, case_from_row};
use crate::{Store, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;
use wangban_domain::ids::CaseId;

/// A case with its timeline.
#[derive(Clone, Debug)]
pub struct CaseView {
    pub case: CaseRecord,
    pub audit: Vec<AuditRecord>,
    /// `(purpose, detail)` of every recorded effect.
    pub effects: Vec<(String, String)>,
}

/// A message refused by a worker and kept for an operator.
#[derive(Clone, Debug, Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub worker: String,
    pub event_id: Option<String>,
    pub event_type: Option<String>,
    pub case_id: Option<String>,
    pub reason: String,
    pub failures: i64,
    pub first_at: i64,
    pub last_at: i64,
    pub replayed_at: Option<i64>,
}

impl Store {
    /// A case by case id or application id, with its audit timeline and effects.
    pub async fn case_view(&self, id: &str) -> Result<Option<CaseView>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            case_columns!(),
            " FROM cases WHERE case_id = $1 OR application_id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let case = case_from_row(&row)?;
        let audit = self.audit_of(case.case_id.as_str()).await?;
        let effects: Vec<(String, String)> = sqlx::query_as(
            "SELECT purpose, detail FROM effects WHERE case_id = $1 ORDER BY at, purpose",
        )
        .bind(case.case_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(Some(CaseView {
            case,
            audit,
            effects,
        }))
    }

    /// The state of every case whose application id starts with `prefix`.
    pub async fn states_by_application(
        &self,
        prefix: &str,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT application_id, state FROM cases WHERE application_id LIKE $1")
                .bind(format!("{prefix}%"))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// Application id, state and when it was entered (ms), of the cases whose application id
    /// starts with `prefix` (benchmarks measure end-to-end latency with it).
    pub async fn case_times(&self, prefix: &str) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT application_id, state, state_since FROM cases WHERE application_id LIKE $1",
        )
        .bind(format!("{prefix}%"))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Deliveries handled by every consumer (rows of the inbox), and the mean size in bytes of
    /// the events the workers emitted (benchmarks size their baseline with them).
    pub async fn handled_and_event_size(&self) -> Result<(i64, f64), StoreError> {
        let handled: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM inbox")
            .fetch_one(&self.pool)
            .await?;
        let size: Option<f64> =
            sqlx::query_scalar("SELECT CAST(AVG(LENGTH(payload)) AS DOUBLE PRECISION) FROM outbox")
                .fetch_one(&self.pool)
                .await?;
        Ok((handled, size.unwrap_or(0.0)))
    }

    /// How many cases are in each state.
    pub async fn count_by_state(&self) -> Result<BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM cases GROUP BY state")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().collect())
    }

    /// How many effects of a purpose were recorded per case (more than 1 would be a duplicate —
    /// impossible by the primary key; this is the independent check the tests use).
    pub async fn effect_counts(&self, purpose: &str) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM effects WHERE purpose = $1")
                .bind(purpose)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Cases that have been `awaiting_payment` since `since_ms` or earlier and have no effect
    /// `without_effect` recorded yet.
    pub async fn awaiting_payment_since(
        &self,
        since_ms: i64,
        without_effect: &str,
        limit: i64,
    ) -> Result<Vec<CaseId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT case_id FROM cases c WHERE state = 'awaiting_payment' AND state_since <= $1 \
             AND NOT EXISTS (SELECT 1 FROM effects e WHERE e.case_id = c.case_id AND e.purpose = $2) \
             ORDER BY state_since LIMIT $3",
        )
        .bind(since_ms)
        .bind(without_effect)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        ids.into_iter()
            .map(|s| s.parse().map_err(StoreError::Data))
            .collect()
    }

    /// Keeps a refused message. The same event refused again by the same worker (and not yet
    /// replayed) updates the existing record's count and last time instead of adding one.
    pub async fn record_dead_letter(
        &self,
        worker: &str,
        event_id: Option<&str>,
        event_type: Option<&str>,
        case_id: Option<&str>,
        reason: &str,
        payload: &[u8],
    ) -> Result<i64, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        if let Some(event_id) = event_id {
            // The latest record of this event, locked: a replay of it may be committing right
            // now, and its failure must then become a new record, not fold into the replayed one.
            let sql = match self.backend {
                crate::Backend::Postgres => {
                    "SELECT id, replayed_at FROM dead_letters WHERE worker = $1 AND event_id = $2 ORDER BY id DESC LIMIT 1 FOR UPDATE"
                }
                crate::Backend::Sqlite => {
                    "SELECT id, replayed_at FROM dead_letters WHERE worker = $1 AND event_id = $2 ORDER BY id DESC LIMIT 1"
                }
            };
            let existing: Option<(i64, Option<i64>)> = sqlx::query_as(sql)
                .bind(worker)
                .bind(event_id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((id, None)) = existing {
                sqlx::query("UPDATE dead_letters SET failures = failures + 1, last_at = $1, reason = $2 WHERE id = $3")
                    .bind(now)
                    .bind(reason)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                return Ok(id);
            }
        }
        sqlx::query(
            "INSERT INTO dead_letters (worker, event_id, event_type, case_id, reason, payload, failures, first_at, last_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7, $7)",
        )
        .bind(worker)
        .bind(event_id)
        .bind(event_type)
        .bind(case_id)
        .bind(reason)
        .bind(payload.to_vec())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let id: i64 = sqlx::query_scalar("SELECT MAX(id) FROM dead_letters WHERE worker = $1")
            .bind(worker)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Dead letters, newest first, optionally of one worker.
    pub async fn dead_letters(&self, worker: Option<&str>) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, worker, event_id, event_type, case_id, reason, failures, first_at, last_at, replayed_at \
             FROM dead_letters WHERE ($1 = '' OR worker = $1) ORDER BY id DESC",
        )
        .bind(worker.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dead_letter_from_row).collect()
    }
}

fn dead_letter_from_row(row: &sqlx::any::AnyRow) -> Result<DeadLetter, StoreError> {
    use sqlx::Row;
    Ok(DeadLetter {
        id: row.try_get("id")?,
        worker: row.try_get("worker")?,
        event_id: row.try_get("event_id")?,
        event_type: row.try_get("event_type")?,
        case_id: row.try_get("case_id")?,
        reason: row.try_get("reason")?,
        failures: row.try_get("failures")?,
        first_at: row.try_get("first_at")?,
        last_at: row.try_get("last_at")?,
        replayed_at: row.try_get("replayed_at")?,
    })
}
