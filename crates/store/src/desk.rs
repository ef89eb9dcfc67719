//! The review desk: offices, their reviewers and one task per review round of a case.
//!
//! Locks are taken in one order — case row, then office row, then task row — so the dispatcher
//! (case → office → task), the reviewers' claims (office → task) and decisions (case → task)
//! never wait on each other in a circle. Assignments of one office are serialised by its row, so
//! "least open tasks" is read and acted on by one writer at a time.

use crate::{Backend, CaseTx, Store, StoreError};
use serde::{Deserialize, Serialize};
use sqlx::Row;

/// An exit-entry office and the hukou districts it serves.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Office {
    pub id: String,
    pub name: String,
    /// District codes (prefixes of a 6-digit `hukou_region`): `1101` serves every district of
    /// Beijing, `110105` only Chaoyang. The longest listed prefix wins.
    pub districts: Vec<String>,
}

/// A reviewer as configured: the offices whose queue they review and those they supervise.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Reviewer {
    pub id: String,
    pub name: String,
    /// SHA-256 (hex) of the reviewer's bearer token.
    pub token_sha256: String,
    #[serde(default)]
    pub offices: Vec<String>,
    #[serde(default)]
    pub supervises: Vec<String>,
}

/// A reviewer signed in: who, and where they may act.
#[derive(Clone, Debug, Serialize)]
pub struct DeskMember {
    pub id: String,
    pub name: String,
    pub available: bool,
    pub offices: Vec<String>,
    pub supervises: Vec<String>,
}

impl DeskMember {
    /// Whether the member may see and decide a task of `office` in `queue`.
    pub fn may_act_on(&self, office: &str, queue: &str) -> bool {
        self.supervises.iter().any(|o| o == office)
            || (queue == "office" && self.offices.iter().any(|o| o == office))
    }

    /// Whether the member reviews for `office` or supervises it.
    pub fn works_for(&self, office: &str) -> bool {
        self.offices
            .iter()
            .chain(&self.supervises)
            .any(|o| o == office)
    }

    /// Whether the member may see the personal data of `task`'s case: only while the task is
    /// open and they hold it, or supervise its office.
    pub fn may_see_personal_data(&self, task: &Task) -> bool {
        task.decided_at.is_none()
            && (task.reviewer.as_deref() == Some(self.id.as_str())
                || self.supervises.contains(&task.office_id))
    }
}

/// One review round of a case.
#[derive(Clone, Debug, Serialize)]
pub struct Task {
    pub case_id: String,
    /// The portal's application id of the case (read with the task, for reviewers' lists).
    pub application_id: Option<String>,
    pub round: i64,
    pub office_id: String,
    /// `office`, or `supervisor` once the review clock ran out.
    pub queue: String,
    pub reviewer: Option<String>,
    pub assigned_at: Option<i64>,
    pub opened_at: i64,
    pub escalated_at: Option<i64>,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub decision: Option<String>,
}

macro_rules! task_columns {
    () => {
        "case_id, (SELECT c.application_id FROM cases c WHERE c.case_id = review_tasks.case_id) AS application_id, \
         round, office_id, queue, reviewer, assigned_at, opened_at, escalated_at, decided_at, decided_by, decision"
    };
}

fn task_from_row(row: &sqlx::any::AnyRow) -> Result<Task, StoreError> {
    Ok(Task {
        case_id: row.try_get("case_id")?,
        application_id: row.try_get("application_id")?,
        round: row.try_get("round")?,
        office_id: row.try_get("office_id")?,
        queue: row.try_get("queue")?,
        reviewer: row.try_get("reviewer")?,
        assigned_at: row.try_get("assigned_at")?,
        opened_at: row.try_get("opened_at")?,
        escalated_at: row.try_get("escalated_at")?,
        decided_at: row.try_get("decided_at")?,
        decided_by: row.try_get("decided_by")?,
        decision: row.try_get("decision")?,
    })
}

/// The office serving `hukou_region`: the longest district prefix listed.
pub fn office_for<'a>(offices: &'a [Office], hukou_region: &str) -> Option<&'a Office> {
    crate::serving(offices, |o| &o.districts, hukou_region)
}

impl Store {
    /// Makes the desk's tables match the reviewers file: offices and memberships replaced,
    /// reviewers added or updated (their availability kept), those no longer listed deactivated
    /// (their open tasks go back to the queue).
    pub async fn load_desk(
        &self,
        offices: &[Office],
        reviewers: &[Reviewer],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Processes starting together load one after the other.
            sqlx::query("SELECT pg_advisory_xact_lock(7170112)")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM reviewer_offices")
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM review_offices")
            .execute(&mut *tx)
            .await?;
        for o in offices {
            sqlx::query(
                "INSERT INTO review_offices (office_id, name, districts) VALUES ($1, $2, $3)",
            )
            .bind(&o.id)
            .bind(&o.name)
            .bind(o.districts.join(","))
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query("UPDATE reviewers SET active = 0")
            .execute(&mut *tx)
            .await?;
        for r in reviewers {
            sqlx::query(
                "INSERT INTO reviewers (reviewer_id, name, token_sha256, available, active) VALUES ($1, $2, $3, 1, 1) \
                 ON CONFLICT (reviewer_id) DO UPDATE SET name = $2, token_sha256 = $3, active = 1",
            )
            .bind(&r.id)
            .bind(&r.name)
            .bind(&r.token_sha256)
            .execute(&mut *tx)
            .await?;
            let mut memberships: Vec<&String> = r.offices.iter().chain(&r.supervises).collect();
            memberships.sort();
            memberships.dedup();
            for office in memberships {
                sqlx::query(
                    "INSERT INTO reviewer_offices (reviewer_id, office_id, reviews, supervises) VALUES ($1, $2, $3, $4)",
                )
                .bind(&r.id)
                .bind(office)
                .bind(i64::from(r.offices.contains(office)))
                .bind(i64::from(r.supervises.contains(office)))
                .execute(&mut *tx)
                .await?;
            }
        }
        sqlx::query(
            "UPDATE review_tasks SET reviewer = NULL, assigned_at = NULL WHERE decided_at IS NULL \
             AND reviewer IN (SELECT reviewer_id FROM reviewers WHERE active = 0)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The active reviewer whose token hashes to `token_sha256`.
    pub async fn desk_member(&self, token_sha256: &str) -> Result<Option<DeskMember>, StoreError> {
        let Some(row) = sqlx::query(
            "SELECT reviewer_id, name, available FROM reviewers WHERE token_sha256 = $1 AND active = 1",
        )
        .bind(token_sha256)
        .fetch_optional(&self.pool)
        .await?
        else {
            return Ok(None);
        };
        let id: String = row.try_get("reviewer_id")?;
        let available: i64 = row.try_get("available")?;
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT office_id, reviews, supervises FROM reviewer_offices WHERE reviewer_id = $1 ORDER BY office_id",
        )
        .bind(&id)
        .fetch_all(&self.pool)
        .await?;
        let pick = |f: fn(&(String, i64, i64)) -> bool| {
            rows.iter().filter(|r| f(r)).map(|r| r.0.clone()).collect()
        };
        Ok(Some(DeskMember {
            name: row.try_get("name")?,
            id,
            available: available == 1,
            offices: pick(|r| r.1 == 1),
            supervises: pick(|r| r.2 == 1),
        }))
    }

    /// Marks a reviewer available for new assignments, or not. Going away keeps the tasks held;
    /// they return to the queue if held too long.
    pub async fn set_available(&self, reviewer: &str, available: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE reviewers SET available = $1 WHERE reviewer_id = $2")
            .bind(i64::from(available))
            .bind(reviewer)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The open tasks `reviewer` holds, oldest first.
    pub async fn tasks_held_by(&self, reviewer: &str) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM review_tasks WHERE reviewer = $1 AND decided_at IS NULL ORDER BY opened_at"
        ))
        .bind(reviewer)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Every task of `case_id`, by round.
    pub async fn tasks_of(&self, case_id: &str) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM review_tasks WHERE case_id = $1 ORDER BY round"
        ))
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Open tasks per office and queue, with how many wait unassigned (for operators).
    pub async fn desk_queues(&self) -> Result<Vec<(String, String, i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT office_id, queue, COUNT(*), SUM(CASE WHEN reviewer IS NULL THEN 1 ELSE 0 END) \
             FROM review_tasks WHERE decided_at IS NULL GROUP BY office_id, queue ORDER BY office_id, queue",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every active reviewer with whether they take new cases and how many open tasks they hold.
    pub async fn reviewer_load(&self) -> Result<Vec<(String, bool, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT r.reviewer_id, r.available, \
             (SELECT COUNT(*) FROM review_tasks t WHERE t.reviewer = r.reviewer_id AND t.decided_at IS NULL) \
             FROM reviewers r WHERE r.active = 1 ORDER BY r.reviewer_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(r, a, n)| (r, a == 1, n)).collect())
    }

    /// Gives `member` the oldest waiting task they may take (their offices' queues and the
    /// supervisor queues of offices they supervise), or `None` when there is none.
    pub async fn claim_next(&self, member: &DeskMember) -> Result<Option<Task>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let pick = match self.backend {
            Backend::Postgres => concat!(
                "SELECT t.case_id, t.round FROM review_tasks t JOIN reviewer_offices o ",
                "ON o.office_id = t.office_id AND o.reviewer_id = $1 ",
                "WHERE t.decided_at IS NULL AND t.reviewer IS NULL ",
                "AND ((t.queue = 'office' AND o.reviews = 1) OR o.supervises = 1) ",
                "ORDER BY t.queue DESC, t.opened_at LIMIT 1 FOR UPDATE OF t SKIP LOCKED"
            ),
            Backend::Sqlite => concat!(
                "SELECT t.case_id, t.round FROM review_tasks t JOIN reviewer_offices o ",
                "ON o.office_id = t.office_id AND o.reviewer_id = $1 ",
                "WHERE t.decided_at IS NULL AND t.reviewer IS NULL ",
                "AND ((t.queue = 'office' AND o.reviews = 1) OR o.supervises = 1) ",
                "ORDER BY t.queue DESC, t.opened_at LIMIT 1"
            ),
        };
        let Some((case_id, round)): Option<(String, i64)> = sqlx::query_as(pick)
            .bind(&member.id)
            .fetch_optional(&mut *tx)
            .await?
        else {
            return Ok(None);
        };
        let taken = sqlx::query(
            "UPDATE review_tasks SET reviewer = $1, assigned_at = $2 \
             WHERE case_id = $3 AND round = $4 AND reviewer IS NULL AND decided_at IS NULL",
        )
        .bind(&member.id)
        .bind(self.clock.now_ms())
        .bind(&case_id)
        .bind(round)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if taken != 1 {
            return Err(StoreError::Conflict("the task was taken meanwhile".into()));
        }
        let row = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM review_tasks WHERE case_id = $1 AND round = $2"
        ))
        .bind(&case_id)
        .bind(round)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        task_from_row(&row).map(Some)
    }

    /// Puts the open task of `case_id` held by `reviewer` back in its queue; false when they do
    /// not hold it.
    pub async fn release_task(&self, reviewer: &str, case_id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query(
            "UPDATE review_tasks SET reviewer = NULL, assigned_at = NULL \
             WHERE case_id = $1 AND reviewer = $2 AND decided_at IS NULL",
        )
        .bind(case_id)
        .bind(reviewer)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Puts every open task held since before `before_ms` back in its queue; returns how many.
    pub async fn release_held_before(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(
            "UPDATE review_tasks SET reviewer = NULL, assigned_at = NULL \
             WHERE decided_at IS NULL AND reviewer IS NOT NULL AND assigned_at < $1",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected())
    }

    /// Cases whose review was escalated, with when (breaches of the review clock).
    pub async fn escalated_tasks(&self) -> Result<Vec<Task>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            task_columns!(),
            " FROM review_tasks WHERE escalated_at IS NOT NULL ORDER BY escalated_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(task_from_row).collect()
    }
}

impl CaseTx {
    /// The offices as loaded (read inside the dispatcher's transaction).
    pub async fn desk_offices(&mut self) -> Result<Vec<Office>, StoreError> {
        self.flush().await?;
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT office_id, name, districts FROM review_offices ORDER BY office_id",
        )
        .fetch_all(self.conn())
        .await?;
        let office = |(id, name, districts): (String, String, String)| Office {
            districts: districts.split(',').map(str::to_owned).collect(),
            id,
            name,
        };
        Ok(rows.into_iter().map(office).collect())
    }

    /// The task of `round` of `case_id`, if it was opened (locked on PostgreSQL).
    pub async fn task(&mut self, case_id: &str, round: i64) -> Result<Option<Task>, StoreError> {
        self.flush().await?;
        let sql = match self.backend {
            Backend::Postgres => concat!(
                "SELECT ",
                task_columns!(),
                " FROM review_tasks WHERE case_id = $1 AND round = $2 FOR UPDATE"
            ),
            Backend::Sqlite => concat!(
                "SELECT ",
                task_columns!(),
                " FROM review_tasks WHERE case_id = $1 AND round = $2"
            ),
        };
        let row = sqlx::query(sql)
            .bind(case_id)
            .bind(round)
            .fetch_optional(self.conn())
            .await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// Opens the task of `round` of `case_id` in `office`'s queue and assigns it: to `preferred`
    /// when they review for the office and are available, else to the office's available
    /// reviewer with the fewest open tasks; left waiting in the queue when nobody is available.
    /// Idempotent: an existing task is returned as it is.
    pub async fn open_task(
        &mut self,
        case_id: &str,
        round: i64,
        office: &str,
        preferred: Option<&str>,
    ) -> Result<Task, StoreError> {
        self.flush().await?;
        let lock = match self.backend {
            Backend::Postgres => {
                "SELECT office_id FROM review_offices WHERE office_id = $1 FOR UPDATE"
            }
            Backend::Sqlite => "SELECT office_id FROM review_offices WHERE office_id = $1",
        };
        sqlx::query(lock)
            .bind(office)
            .fetch_optional(self.conn())
            .await?
            .ok_or_else(|| StoreError::Data(format!("no review office `{office}`")))?;
        if let Some(task) = self.task(case_id, round).await? {
            return Ok(task);
        }
        let eligible = "SELECT r.reviewer_id FROM reviewers r JOIN reviewer_offices o ON o.reviewer_id = r.reviewer_id \
             WHERE o.office_id = $1 AND o.reviews = 1 AND r.available = 1 AND r.active = 1 AND r.reviewer_id = $2";
        let mut reviewer = None;
        if let Some(p) = preferred {
            reviewer = sqlx::query_scalar::<_, String>(eligible)
                .bind(office)
                .bind(p)
                .fetch_optional(self.conn())
                .await?;
        }
        if reviewer.is_none() {
            reviewer = sqlx::query_scalar(
                "SELECT r.reviewer_id FROM reviewers r JOIN reviewer_offices o ON o.reviewer_id = r.reviewer_id \
                 WHERE o.office_id = $1 AND o.reviews = 1 AND r.available = 1 AND r.active = 1 \
                 ORDER BY (SELECT COUNT(*) FROM review_tasks t WHERE t.reviewer = r.reviewer_id AND t.decided_at IS NULL), \
                 r.reviewer_id LIMIT 1",
            )
            .bind(office)
            .fetch_optional(self.conn())
            .await?;
        }
        let now = self.clock.now_ms();
        sqlx::query(
            "INSERT INTO review_tasks (case_id, round, office_id, queue, reviewer, assigned_at, opened_at) \
             VALUES ($1, $2, $3, 'office', $4, $5, $6)",
        )
        .bind(case_id)
        .bind(round)
        .bind(office)
        .bind(&reviewer)
        .bind(reviewer.as_ref().map(|_| now))
        .bind(now)
        .execute(self.conn())
        .await?;
        self.task(case_id, round)
            .await?
            .ok_or_else(|| StoreError::Data("the task just opened is missing".into()))
    }

    /// Records the decision on an open task; false when it was decided already.
    pub async fn decide_task(
        &mut self,
        case_id: &str,
        round: i64,
        by: &str,
        decision: &str,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        Ok(sqlx::query(
            "UPDATE review_tasks SET decided_at = $1, decided_by = $2, decision = $3 \
             WHERE case_id = $4 AND round = $5 AND decided_at IS NULL",
        )
        .bind(self.clock.now_ms())
        .bind(by)
        .bind(decision)
        .bind(case_id)
        .bind(round)
        .execute(self.conn())
        .await?
        .rows_affected()
            == 1)
    }

    /// Moves an open task to its office's supervisor queue, to the available supervisor with the
    /// fewest open tasks (or waiting); false when it was decided or escalated already.
    pub async fn escalate_task(
        &mut self,
        case_id: &str,
        round: i64,
    ) -> Result<Option<Task>, StoreError> {
        self.flush().await?;
        let Some(task) = self.task(case_id, round).await? else {
            return Ok(None);
        };
        if task.decided_at.is_some() || task.queue != "office" {
            return Ok(None);
        }
        let supervisor: Option<String> = sqlx::query_scalar(
            "SELECT r.reviewer_id FROM reviewers r JOIN reviewer_offices o ON o.reviewer_id = r.reviewer_id \
             WHERE o.office_id = $1 AND o.supervises = 1 AND r.available = 1 AND r.active = 1 \
             ORDER BY (SELECT COUNT(*) FROM review_tasks t WHERE t.reviewer = r.reviewer_id AND t.decided_at IS NULL), \
             r.reviewer_id LIMIT 1",
        )
        .bind(&task.office_id)
        .fetch_optional(self.conn())
        .await?;
        let now = self.clock.now_ms();
        sqlx::query(
            "UPDATE review_tasks SET queue = 'supervisor', escalated_at = $1, reviewer = $2, assigned_at = $3 \
             WHERE case_id = $4 AND round = $5",
        )
        .bind(now)
        .bind(&supervisor)
        .bind(supervisor.as_ref().map(|_| now))
        .bind(case_id)
        .bind(round)
        .execute(self.conn())
        .await?;
        self.task(case_id, round).await
    }
}
