//! What operators need beyond the case itself: retries, dead-letter replay, cases by ID number,
//! per-case chain verification, and the history of cases per state.

use crate::audit::{AuditProblem, AuditRecord, record_from_row, verify_chain};
use crate::{Backend, Store, StoreError};
use serde::Serialize;
use sqlx::Row;

/// A transient failure that was retried.
#[derive(Clone, Debug, Serialize)]
pub struct Retry {
    pub worker: String,
    pub event_id: String,
    pub event_type: String,
    pub attempt: i64,
    pub error: String,
    pub at: i64,
}

/// Cases in one state at one time.
#[derive(Clone, Debug, Serialize)]
pub struct StateSample {
    pub at: i64,
    pub state: String,
    pub n: i64,
}

/// A dead letter claimed for replay: publish `payload` to `worker`'s queue, then
/// [`ReplayClaim::complete`]. On PostgreSQL the row stays locked meanwhile, so two operators
/// replaying at once replay it once. Dropped without completing, nothing changes.
pub struct ReplayClaim {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    pub id: i64,
    pub worker: String,
    pub payload: Vec<u8>,
    clock: wangban_domain::clock::Clock,
}

impl ReplayClaim {
    /// Marks the dead letter replayed.
    pub async fn complete(mut self) -> Result<(), StoreError> {
        sqlx::query("UPDATE dead_letters SET replayed_at = $1 WHERE id = $2")
            .bind(self.clock.now_ms())
            .bind(self.id)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Records a retried transient failure of a delivery about `case_id`.
    pub async fn record_retry(
        &self,
        case_id: &str,
        worker: &str,
        event_id: &str,
        event_type: &str,
        attempt: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO retries (case_id, worker, event_id, event_type, attempt, error, at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(case_id)
        .bind(worker)
        .bind(event_id)
        .bind(event_type)
        .bind(attempt)
        .bind(error)
        .bind(self.clock.now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The retries of a case, oldest first.
    pub async fn retries_of(&self, case_id: &str) -> Result<Vec<Retry>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker, event_id, event_type, attempt, error, at FROM retries WHERE case_id = $1 ORDER BY at",
        )
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Retry {
                    worker: r.try_get("worker")?,
                    event_id: r.try_get("event_id")?,
                    event_type: r.try_get("event_type")?,
                    attempt: r.try_get("attempt")?,
                    error: r.try_get("error")?,
                    at: r.try_get("at")?,
                })
            })
            .collect()
    }

    /// Claims an unreplayed dead letter for replay; `None` if there is none with that id.
    pub async fn claim_dead_letter(&self, id: i64) -> Result<Option<ReplayClaim>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let sql = match self.backend {
            Backend::Postgres => {
                "SELECT worker, payload FROM dead_letters WHERE id = $1 AND replayed_at IS NULL FOR UPDATE SKIP LOCKED"
            }
            Backend::Sqlite => {
                "SELECT worker, payload FROM dead_letters WHERE id = $1 AND replayed_at IS NULL"
            }
        };
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(sql)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        Ok(row.map(|(worker, payload)| ReplayClaim {
            tx,
            id,
            worker,
            payload,
            clock: self.clock.clone(),
        }))
    }

    /// Ids of the dead letters not yet replayed, optionally of one worker, oldest first.
    pub async fn unreplayed_dead_letters(
        &self,
        worker: Option<&str>,
    ) -> Result<Vec<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT id FROM dead_letters WHERE replayed_at IS NULL AND ($1 = '' OR worker = $1) ORDER BY id",
        )
        .bind(worker.unwrap_or(""))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The cases of a person, found by the keyed digest of their ID number.
    pub async fn cases_by_fingerprint(&self, fingerprint: &str) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT case_id FROM cases WHERE id_fingerprint = $1 ORDER BY created_at",
        )
        .bind(fingerprint)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Verifies one case's chain; `None` when it is intact.
    pub async fn verify_case(&self, case_id: &str) -> Result<Option<AuditProblem>, StoreError> {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT audit_seq, audit_head FROM cases WHERE case_id = $1")
                .bind(case_id)
                .fetch_optional(&self.pool)
                .await?;
        let Some((seq, head)) = head else {
            return Err(StoreError::Data(format!("no case {case_id}")));
        };
        let records = self.audit_of(case_id).await?;
        Ok(verify_chain(case_id, &records, seq, &head))
    }

    /// `(case id, since)` of every case in `state`, oldest first.
    pub async fn cases_in_state(&self, state: &str) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT case_id, state_since FROM cases WHERE state = $1 ORDER BY state_since",
        )
        .bind(state)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The states every case now in one of `states` entered, in order, with the time of each
    /// entry (from its recorded transitions; the entry into `submitted` is not one).
    pub async fn state_entries_of_cases_in(
        &self,
        states: &[&str],
    ) -> Result<Vec<(String, Vec<(String, i64)>)>, StoreError> {
        if states.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=states.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT a.case_id, a.at, a.detail FROM audit a JOIN cases c ON c.case_id = a.case_id \
             WHERE a.kind = 'transition' AND c.state IN ({}) ORDER BY a.case_id, a.seq",
            placeholders.join(", ")
        );
        let mut query = sqlx::query_as::<_, (String, i64, String)>(sqlx::AssertSqlSafe(sql));
        for s in states {
            query = query.bind(*s);
        }
        let mut out: Vec<(String, Vec<(String, i64)>)> = Vec::new();
        for (case, at, detail) in query.fetch_all(&self.pool).await? {
            let to = serde_json::from_str::<serde_json::Value>(&detail)
                .ok()
                .and_then(|d| d.get("to").and_then(|t| t.as_str()).map(str::to_owned))
                .ok_or_else(|| {
                    StoreError::Data(format!("case {case}: a transition without `to`"))
                })?;
            match out.last_mut() {
                Some((c, entries)) if *c == case => entries.push((to, at)),
                _ => out.push((case, vec![(to, at)])),
            }
        }
        Ok(out)
    }

    /// The detail of one effect of every case that has it: `(case id, detail JSON)`.
    pub async fn effects_with_purpose(
        &self,
        purpose: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(
            sqlx::query_as("SELECT case_id, detail FROM effects WHERE purpose = $1")
                .bind(purpose)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// `(case id, detail JSON)` of every effect whose purpose starts with `prefix`.
    pub async fn effects_with_purpose_prefix(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT case_id, detail FROM effects WHERE substr(purpose, 1, length($1)) = $1 ORDER BY at",
        )
        .bind(prefix)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Cases whose production completed after its 3-working-day promise (the production worker
    /// marks the completion `late`).
    pub async fn late_productions(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT case_id FROM audit WHERE kind = 'transition' \
             AND detail LIKE '%\"step\":\"complete_production\"%' AND detail LIKE '%\"late\":true%' ORDER BY at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(c,)| c).collect())
    }

    /// Every audit record of `kind`, oldest first.
    pub async fn audit_of_kind(&self, kind: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT case_id, seq, at, kind, event_id, detail, prev_hash, hash FROM audit WHERE kind = $1 ORDER BY at",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Deliveries each worker handled since `since_ms`, across every process (from the inbox).
    pub async fn handled_since(
        &self,
        since_ms: i64,
    ) -> Result<std::collections::BTreeMap<String, i64>, StoreError> {
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT consumer, COUNT(*) FROM inbox WHERE handled_at >= $1 GROUP BY consumer",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().collect())
    }

    /// Records the current number of cases per state.
    pub async fn sample_states(&self) -> Result<(), StoreError> {
        let counts = self.count_by_state().await?;
        let at = self.clock.now_ms();
        let mut tx = self.pool.begin().await?;
        for (state, n) in counts {
            sqlx::query("INSERT INTO state_samples (at, state, n) VALUES ($1, $2, $3)")
                .bind(at)
                .bind(state)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Samples since `since_ms`, oldest first.
    pub async fn state_history(&self, since_ms: i64) -> Result<Vec<StateSample>, StoreError> {
        let rows: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT at, state, n FROM state_samples WHERE at >= $1 ORDER BY at, state",
        )
        .bind(since_ms)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(at, state, n)| StateSample { at, state, n })
            .collect())
    }
}
