//! Scheduled events: deadlines stored in the transaction of the decision that set them, and fired
//! — moved into the outbox, for the relay to publish — once the store's clock passes their due
//! time. On PostgreSQL the due rows are locked (`FOR UPDATE SKIP LOCKED`), so of several
//! processes exactly one fires each; the event's id is derived from its case and deadline, so a
//! deadline scheduled twice is one row, and one fired twice is one delivery to each consumer.

use crate::{Backend, CaseTx, Store, StoreError};
use sqlx::{Any, Executor};
use wangban_domain::events::Envelope;

const INSERT: &str = "INSERT INTO scheduled (event_id, case_id, routing_key, payload, due_at, created_at, state, producer) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (event_id) DO NOTHING";

/// A deadline waiting for its time, as operators see it on a case.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq)]
pub struct ScheduledEvent {
    pub event_id: String,
    pub routing_key: String,
    /// Milliseconds since the Unix epoch.
    pub due_at: i64,
}

async fn insert<'e>(
    ex: impl Executor<'e, Database = Any>,
    event: &Envelope,
    due_at: i64,
    now: i64,
    state: &str,
    producer: &str,
) -> Result<(), StoreError> {
    let payload = String::from_utf8(event.encode()).map_err(|e| StoreError::Data(e.to_string()))?;
    sqlx::query(INSERT)
        .bind(event.id.as_str())
        .bind(event.subject.as_str())
        .bind(event.routing_key())
        .bind(payload)
        .bind(due_at)
        .bind(now)
        .bind(state)
        .bind(producer)
        .execute(ex)
        .await?;
    Ok(())
}

impl CaseTx {
    /// Schedules `event` for `due_at` (ms since the Unix epoch), a deadline of the case's
    /// `state`: it is fired only if this transaction commits, and cancelled when the case leaves
    /// `state` ([`CaseTx::cancel_scheduled`]). A row with the same event id stays as it is. Once
    /// fired, it is relayed as `producer`'s (see [`CaseTx::enqueue`]).
    pub async fn schedule(
        &mut self,
        event: &Envelope,
        due_at: i64,
        state: &str,
        producer: &str,
    ) -> Result<(), StoreError> {
        self.flush().await?;
        let now = self.clock.now_ms();
        insert(self.conn(), event, due_at, now, state, producer).await
    }

    /// Cancels the deadlines of `case` that belong to `state` (the case has just left it).
    /// Held and sent with the transaction's other writes ([`CaseTx::flush`]).
    pub async fn cancel_scheduled(&mut self, case: &str, state: &str) -> Result<(), StoreError> {
        self.pending_unschedule(case, state);
        Ok(())
    }
}

impl Store {
    /// [`CaseTx::schedule`] outside a handler's transaction (deadlines of cases that were
    /// already waiting when their worker started: see the workers' `tick`).
    pub async fn schedule(
        &self,
        event: &Envelope,
        due_at: i64,
        state: &str,
        producer: &str,
    ) -> Result<(), StoreError> {
        insert(
            &self.pool,
            event,
            due_at,
            self.clock.now_ms(),
            state,
            producer,
        )
        .await
    }

    /// Moves up to `limit` events whose time has come into the outbox, earliest first, and
    /// returns how many.
    pub async fn fire_due(&self, limit: i64) -> Result<usize, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT event_id, routing_key, payload, producer FROM scheduled WHERE due_at <= $1 \
                 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT event_id, routing_key, payload, producer FROM scheduled WHERE due_at <= $1 \
                 ORDER BY due_at LIMIT $2"
            }
        };
        let due: Vec<(String, String, String, String)> = sqlx::query_as(sql)
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        for (event_id, routing_key, payload, producer) in &due {
            sqlx::query(
                "INSERT INTO outbox (event_id, routing_key, payload, created_at, producer) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(event_id)
            .bind(routing_key)
            .bind(payload)
            .bind(now)
            .bind(producer)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM scheduled WHERE event_id = $1")
                .bind(event_id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(due.len())
    }

    /// The deadlines waiting for `case`, earliest first.
    pub async fn scheduled_for(&self, case: &str) -> Result<Vec<ScheduledEvent>, StoreError> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT event_id, routing_key, due_at FROM scheduled WHERE case_id = $1 ORDER BY due_at",
        )
        .bind(case)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(event_id, routing_key, due_at)| ScheduledEvent {
                event_id,
                routing_key,
                due_at,
            })
            .collect())
    }

    /// Deadlines waiting, and the earliest due time.
    pub async fn scheduled_backlog(&self) -> Result<(i64, Option<i64>), StoreError> {
        Ok(
            sqlx::query_as("SELECT COUNT(*), MIN(due_at) FROM scheduled")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Case, time entered and review round of every case in `state` with no deadline waiting
    /// (cases a version that scanned instead of scheduling left waiting), oldest first.
    pub async fn waiting_unscheduled(
        &self,
        state: &str,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT case_id, state_since, review_round FROM cases c WHERE state = $1 \
             AND NOT EXISTS (SELECT 1 FROM scheduled s WHERE s.case_id = c.case_id) ORDER BY state_since",
        )
        .bind(state)
        .fetch_all(&self.pool)
        .await?)
    }
}
