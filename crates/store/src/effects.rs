//! Effect commands: requested in a worker's transaction, carried out after it commits by the
//! party's executor, which holds no transaction while it calls the party.
//!
//! A command is `pending` until its executor marks it `done` — in the same transaction that
//! records the party's answer — or gives up on it (`dead`, for an operator to retry). Claiming a
//! command moves its `not_before` past the attempt (a lease): an executor that dies mid-call
//! leaves the command to be claimed again when the lease ends, and the party's idempotency key
//! makes the second call harmless.

use crate::tx::{CaseRecord, CaseTx, case_columns, case_from_row};
use crate::{Backend, Store, StoreError};
use serde::Serialize;
use wangban_domain::ids::CaseId;

/// An effect command as stored.
#[derive(Clone, Debug, Serialize)]
pub struct EffectCommand {
    pub case_id: String,
    pub purpose: String,
    pub party: String,
    /// The command's JSON (`wangban_domain::effects::Effect`).
    pub command: String,
    /// `pending`, `done` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub not_before: i64,
    pub cause_id: String,
    pub correlation_id: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Commands not done, per party and state, for operators.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EffectCounts {
    /// `(party, state, count)`.
    pub by_party: Vec<(String, String, i64)>,
    /// The oldest pending command's age in milliseconds, by party.
    pub oldest_pending_ms: Vec<(String, i64)>,
}

macro_rules! command_columns {
    () => {
        "case_id, purpose, party, command, state, attempts, last_error, not_before, cause_id, correlation_id, created_at, updated_at"
    };
}

type CommandRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    String,
    String,
    i64,
    i64,
);

fn command_of(r: CommandRow) -> EffectCommand {
    EffectCommand {
        case_id: r.0,
        purpose: r.1,
        party: r.2,
        command: r.3,
        state: r.4,
        attempts: r.5,
        last_error: r.6,
        not_before: r.7,
        cause_id: r.8,
        correlation_id: r.9,
        created_at: r.10,
        updated_at: r.11,
    }
}

impl CaseTx {
    /// Requests an effect: committed with the decision that asked for it. False when
    /// `(case, purpose)` was requested before (nothing changes: an effect happens once).
    #[allow(clippy::too_many_arguments)]
    pub async fn request_effect(
        &mut self,
        case_id: &CaseId,
        purpose: &str,
        party: &str,
        command: &str,
        cause_id: &str,
        correlation_id: &str,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        let now = self.clock.now_ms();
        let done = sqlx::query(
            "INSERT INTO effect_commands (case_id, purpose, party, command, state, attempts, last_error, not_before, cause_id, correlation_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'pending', 0, NULL, $5, $6, $7, $5, $5) ON CONFLICT (case_id, purpose) DO NOTHING",
        )
        .bind(case_id.as_str())
        .bind(purpose)
        .bind(party)
        .bind(command)
        .bind(now)
        .bind(cause_id)
        .bind(correlation_id)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Marks a pending command done, as the first statement of the transaction that records the
    /// party's answer. False when it is no longer pending (another executor finished it after
    /// this one's lease ran out): the caller drops the transaction.
    pub async fn finish_effect(
        &mut self,
        case_id: &str,
        purpose: &str,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        self.close_effect(case_id, purpose, "done", None).await
    }

    /// Gives up on a pending command (`dead`, with the last error). False when it is no longer
    /// pending.
    pub async fn abandon_effect(
        &mut self,
        case_id: &str,
        purpose: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        self.close_effect(case_id, purpose, "dead", Some(error))
            .await
    }

    /// Moves a pending command to `state` with `error` as its last error.
    async fn close_effect(
        &mut self,
        case_id: &str,
        purpose: &str,
        state: &str,
        error: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        let done = sqlx::query(
            "UPDATE effect_commands SET state = $1, last_error = $2, updated_at = $3 \
             WHERE case_id = $4 AND purpose = $5 AND state = 'pending'",
        )
        .bind(state)
        .bind(error)
        .bind(self.clock.now_ms())
        .bind(case_id)
        .bind(purpose)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

impl Store {
    /// Claims up to `limit` due commands of `party`, oldest due first: each claimed command's
    /// attempt count goes up and it is not due again for `lease_ms` (PostgreSQL: rows another
    /// executor is claiming are skipped, never waited for).
    pub async fn claim_effects(
        &self,
        party: &str,
        limit: i64,
        lease_ms: i64,
    ) -> Result<Vec<EffectCommand>, StoreError> {
        let sql = match self.backend {
            Backend::Postgres => concat!(
                "UPDATE effect_commands SET attempts = attempts + 1, not_before = $1, updated_at = $2 \
                 WHERE (case_id, purpose) IN (SELECT case_id, purpose FROM effect_commands \
                 WHERE party = $3 AND state = 'pending' AND not_before <= $2 ORDER BY not_before LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING ",
                command_columns!()
            ),
            Backend::Sqlite => concat!(
                "UPDATE effect_commands SET attempts = attempts + 1, not_before = $1, updated_at = $2 \
                 WHERE (case_id, purpose) IN (SELECT case_id, purpose FROM effect_commands \
                 WHERE party = $3 AND state = 'pending' AND not_before <= $2 ORDER BY not_before LIMIT $4) \
                 RETURNING ",
                command_columns!()
            ),
        };
        let now = self.clock.now_ms();
        let rows: Vec<CommandRow> = sqlx::query_as(sql)
            .bind(now + lease_ms)
            .bind(now)
            .bind(party)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(command_of).collect())
    }

    /// Schedules the next attempt of a pending command at `not_before`, keeping the error.
    pub async fn retry_effect_at(
        &self,
        case_id: &str,
        purpose: &str,
        error: &str,
        not_before: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE effect_commands SET last_error = $1, not_before = $2, updated_at = $3 \
             WHERE case_id = $4 AND purpose = $5 AND state = 'pending'",
        )
        .bind(error)
        .bind(not_before)
        .bind(self.clock.now_ms())
        .bind(case_id)
        .bind(purpose)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An operator's retry of a dead command: pending again, attempts from zero, due now.
    /// False when there is no dead command with that key.
    pub async fn revive_effect(&self, case_id: &str, purpose: &str) -> Result<bool, StoreError> {
        let now = self.clock.now_ms();
        let done = sqlx::query(
            "UPDATE effect_commands SET state = 'pending', attempts = 0, not_before = $1, updated_at = $1 \
             WHERE case_id = $2 AND purpose = $3 AND state = 'dead'",
        )
        .bind(now)
        .bind(case_id)
        .bind(purpose)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The number of commands not yet carried out.
    pub async fn effect_backlog(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM effect_commands WHERE state = 'pending'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The commands of a case, oldest first.
    pub async fn effect_commands_of(
        &self,
        case_id: &str,
    ) -> Result<Vec<EffectCommand>, StoreError> {
        let rows: Vec<CommandRow> = sqlx::query_as(concat!(
            "SELECT ",
            command_columns!(),
            " FROM effect_commands WHERE case_id = $1 ORDER BY created_at, purpose"
        ))
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(command_of).collect())
    }

    /// Commands in `state` (`pending` or `dead`), oldest change first, at most `limit`.
    pub async fn effect_commands_in(
        &self,
        state: &str,
        limit: i64,
    ) -> Result<Vec<EffectCommand>, StoreError> {
        let rows: Vec<CommandRow> = sqlx::query_as(concat!(
            "SELECT ",
            command_columns!(),
            " FROM effect_commands WHERE state = $1 ORDER BY updated_at LIMIT $2"
        ))
        .bind(state)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(command_of).collect())
    }

    /// Commands not done (pending, dead) per party and state, and the oldest pending one's age
    /// per party.
    pub async fn effect_counts_by_party(&self) -> Result<EffectCounts, StoreError> {
        let by_party: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT party, state, COUNT(*) FROM effect_commands WHERE state IN ('pending', 'dead') GROUP BY party, state ORDER BY party, state",
        )
        .fetch_all(&self.pool)
        .await?;
        let oldest: Vec<(String, i64)> = sqlx::query_as(
            "SELECT party, MIN(created_at) FROM effect_commands WHERE state = 'pending' GROUP BY party ORDER BY party",
        )
        .fetch_all(&self.pool)
        .await?;
        let now = self.clock.now_ms();
        Ok(EffectCounts {
            by_party,
            oldest_pending_ms: oldest.into_iter().map(|(p, t)| (p, now - t)).collect(),
        })
    }

    /// Cases as stored, by id, read without a lock in one statement (an executor reads the phone
    /// numbers or the addresses its claimed commands need this way, outside any transaction). A
    /// case that does not exist is not in the map.
    pub async fn case_records(
        &self,
        case_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, CaseRecord>, StoreError> {
        if case_ids.is_empty() {
            return Ok(Default::default());
        }
        // As many placeholders as the next power of two, the last id repeated: a handful of
        // statement texts, so that they do not push others out of the connection's cache.
        let n = case_ids.len().next_power_of_two();
        let params: Vec<String> = (1..=n).map(|i| format!("${i}")).collect();
        let sql = format!(
            concat!(
                "SELECT ",
                case_columns!(),
                " FROM cases WHERE case_id IN ({})"
            ),
            params.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        let last = case_ids[case_ids.len() - 1];
        for i in 0..n {
            query = query.bind(case_ids.get(i).copied().unwrap_or(last));
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| case_from_row(r).map(|c| (c.case_id.as_str().to_owned(), c)))
            .collect()
    }
}
