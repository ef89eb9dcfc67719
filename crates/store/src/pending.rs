//! Writes of a [`crate::CaseTx`] that nothing in the transaction waits on — a case's new state,
//! its audit records and chain head, the outgoing events, the deadlines it leaves — held until
//! the next statement that could see them (a read, the end of a delivery's savepoint, the
//! commit) and then sent together: on PostgreSQL one statement (data-modifying `WITH`), one
//! round trip instead of five or more per hop; on SQLite one after the other.
//!
//! The checks stay: a case's row is updated only if its version and chain head are still those
//! the transaction read, else the flush fails with [`StoreError::Conflict`].

use crate::audit::AuditRecord;
use crate::{Backend, StoreError};
use sqlx::AnyConnection;

/// Held writes, in the order they were made within each kind.
#[derive(Clone, Debug, Default)]
pub(crate) struct Pending {
    cases: Vec<CaseWrite>,
    audit: Vec<AuditRecord>,
    outbox: Vec<OutboxRow>,
    /// `(case, state)`: deadlines of a state the case has left.
    unscheduled: Vec<(String, String)>,
}

/// The changes to one case's row.
#[derive(Clone, Debug)]
struct CaseWrite {
    case_id: String,
    state: Option<StateWrite>,
    head: Option<HeadWrite>,
}

/// A move to another state: checked against the version read, written in full.
#[derive(Clone, Debug)]
pub(crate) struct StateWrite {
    pub expected_version: i64,
    pub version: i64,
    pub state: &'static str,
    pub is_open: i64,
    pub review_round: i64,
    pub reviewer: Option<String>,
    pub state_since: i64,
}

/// The audit chain's head moved from `expected_seq` to `seq`/`hash`.
#[derive(Clone, Debug)]
struct HeadWrite {
    expected_seq: i64,
    seq: i64,
    hash: String,
}

/// An outbox row.
#[derive(Clone, Debug)]
pub(crate) struct OutboxRow {
    pub event_id: String,
    pub routing_key: String,
    pub payload: String,
    pub created_at: i64,
    pub producer: String,
}

/// A bound value of the combined statement.
enum Arg {
    Int(i64),
    Text(String),
    MaybeText(Option<String>),
}

impl Pending {
    pub(crate) fn is_empty(&self) -> bool {
        self.cases.is_empty()
            && self.audit.is_empty()
            && self.outbox.is_empty()
            && self.unscheduled.is_empty()
    }

    fn case(&mut self, case_id: &str) -> &mut CaseWrite {
        match self.cases.iter().position(|c| c.case_id == case_id) {
            Some(i) => &mut self.cases[i],
            None => {
                self.cases.push(CaseWrite {
                    case_id: case_id.to_owned(),
                    state: None,
                    head: None,
                });
                self.cases.last_mut().expect("just pushed")
            }
        }
    }

    /// The case moves (again): the version checked is the first one read.
    pub(crate) fn set_state(&mut self, case_id: &str, mut write: StateWrite) {
        let case = self.case(case_id);
        if let Some(earlier) = &case.state {
            write.expected_version = earlier.expected_version;
        }
        case.state = Some(write);
    }

    /// An audit record appended after `expected_seq` (the head as this transaction knew it).
    pub(crate) fn append_audit(&mut self, record: AuditRecord, expected_seq: i64) {
        let case = self.case(&record.case_id);
        let expected_seq = case.head.as_ref().map_or(expected_seq, |h| h.expected_seq);
        case.head = Some(HeadWrite {
            expected_seq,
            seq: record.seq,
            hash: record.hash.clone(),
        });
        self.audit.push(record);
    }

    pub(crate) fn enqueue(&mut self, row: OutboxRow) {
        self.outbox.push(row);
    }

    pub(crate) fn unschedule(&mut self, case_id: &str, state: &str) {
        let key = (case_id.to_owned(), state.to_owned());
        if !self.unscheduled.contains(&key) {
            self.unscheduled.push(key);
        }
    }

    /// Sends the held writes and forgets them. On failure nothing of them is written (one
    /// statement on PostgreSQL; on SQLite the caller's savepoint or transaction is rolled back).
    pub(crate) async fn flush(
        &mut self,
        conn: &mut AnyConnection,
        backend: Backend,
    ) -> Result<(), StoreError> {
        if self.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(self);
        match backend {
            Backend::Postgres => pending.flush_combined(conn).await,
            Backend::Sqlite => pending.flush_each(conn).await,
        }
    }

    /// PostgreSQL: every write in one statement. Sub-statements of a `WITH` all run, whether or
    /// not the final `SELECT` reads them; it reads how many rows each case update changed.
    async fn flush_combined(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        let mut args: Vec<Arg> = Vec::new();
        let next = |args: &mut Vec<Arg>, a: Arg| {
            args.push(a);
            format!("${}", args.len())
        };
        let mut parts: Vec<String> = Vec::new();
        if !self.audit.is_empty() {
            let rows: Vec<String> = self
                .audit
                .into_iter()
                .map(|r| {
                    let v = [
                        next(&mut args, Arg::Text(r.case_id)),
                        next(&mut args, Arg::Int(r.seq)),
                        next(&mut args, Arg::Int(r.at)),
                        next(&mut args, Arg::Text(r.kind)),
                        next(&mut args, Arg::MaybeText(r.event_id)),
                        next(&mut args, Arg::Text(r.detail)),
                        next(&mut args, Arg::Text(r.prev_hash)),
                        next(&mut args, Arg::Text(r.hash)),
                    ];
                    format!("({})", v.join(", "))
                })
                .collect();
            parts.push(format!(
                "INSERT INTO audit (case_id, seq, at, kind, event_id, detail, prev_hash, hash) VALUES {}",
                rows.join(", ")
            ));
        }
        if !self.outbox.is_empty() {
            let rows: Vec<String> = self
                .outbox
                .into_iter()
                .map(|r| {
                    let v = [
                        next(&mut args, Arg::Text(r.event_id)),
                        next(&mut args, Arg::Text(r.routing_key)),
                        next(&mut args, Arg::Text(r.payload)),
                        next(&mut args, Arg::Int(r.created_at)),
                        next(&mut args, Arg::Text(r.producer)),
                    ];
                    format!("({})", v.join(", "))
                })
                .collect();
            parts.push(format!(
                "INSERT INTO outbox (event_id, routing_key, payload, created_at, producer) VALUES {}",
                rows.join(", ")
            ));
        }
        if !self.unscheduled.is_empty() {
            let which: Vec<String> = self
                .unscheduled
                .into_iter()
                .map(|(case, state)| {
                    let c = next(&mut args, Arg::Text(case));
                    let s = next(&mut args, Arg::Text(state));
                    format!("(case_id = {c} AND state = {s})")
                })
                .collect();
            parts.push(format!(
                "DELETE FROM scheduled WHERE {}",
                which.join(" OR ")
            ));
        }
        let mut ctes: Vec<String> = parts
            .into_iter()
            .enumerate()
            .map(|(i, p)| format!("w{i} AS ({p})"))
            .collect();
        let mut counts = Vec::new();
        let mut updated = Vec::new();
        for (i, case) in self.cases.into_iter().enumerate() {
            let (set, check) = case_update(&case, &mut |a| next(&mut args, a));
            ctes.push(format!(
                "u{i} AS (UPDATE cases SET {set} WHERE {check} RETURNING 1)"
            ));
            counts.push(format!("(SELECT COUNT(*) FROM u{i})"));
            updated.push(case.case_id);
        }
        if counts.is_empty() {
            counts.push("0".into());
        }
        let sql = format!("WITH {} SELECT {}", ctes.join(", "), counts.join(", "));
        let row = bound(sql, args).fetch_one(&mut *conn).await?;
        for (i, case_id) in updated.iter().enumerate() {
            let n: i64 = sqlx::Row::try_get(&row, i)?;
            if n != 1 {
                return Err(StoreError::Conflict(format!(
                    "{case_id} changed concurrently"
                )));
            }
        }
        Ok(())
    }

    /// SQLite: the same writes one statement at a time.
    async fn flush_each(self, conn: &mut AnyConnection) -> Result<(), StoreError> {
        for r in self.audit {
            sqlx::query(
                "INSERT INTO audit (case_id, seq, at, kind, event_id, detail, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(r.case_id)
            .bind(r.seq)
            .bind(r.at)
            .bind(r.kind)
            .bind(r.event_id)
            .bind(r.detail)
            .bind(r.prev_hash)
            .bind(r.hash)
            .execute(&mut *conn)
            .await?;
        }
        for r in self.outbox {
            sqlx::query("INSERT INTO outbox (event_id, routing_key, payload, created_at, producer) VALUES ($1, $2, $3, $4, $5)")
                .bind(r.event_id)
                .bind(r.routing_key)
                .bind(r.payload)
                .bind(r.created_at)
                .bind(r.producer)
                .execute(&mut *conn)
                .await?;
        }
        for (case, state) in self.unscheduled {
            sqlx::query("DELETE FROM scheduled WHERE case_id = $1 AND state = $2")
                .bind(case)
                .bind(state)
                .execute(&mut *conn)
                .await?;
        }
        for case in self.cases {
            let mut args = Vec::new();
            let (set, check) = case_update(&case, &mut |a| {
                args.push(a);
                format!("${}", args.len())
            });
            let sql = format!("UPDATE cases SET {set} WHERE {check}");
            if bound(sql, args).execute(&mut *conn).await?.rows_affected() != 1 {
                return Err(StoreError::Conflict(format!(
                    "{} changed concurrently",
                    case.case_id
                )));
            }
        }
        Ok(())
    }
}

/// `sql` with `args` bound to its placeholders in order. The text is ours (placeholders, table
/// and column names), never a value.
fn bound(
    sql: String,
    args: Vec<Arg>,
) -> sqlx::query::Query<'static, sqlx::Any, sqlx::any::AnyArguments> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for a in args {
        query = match a {
            Arg::Int(v) => query.bind(v),
            Arg::Text(v) => query.bind(v),
            Arg::MaybeText(v) => query.bind(v),
        };
    }
    query
}

/// The `SET` and `WHERE` of one case's update, binding through `bind`.
fn case_update(case: &CaseWrite, bind: &mut dyn FnMut(Arg) -> String) -> (String, String) {
    let mut set = Vec::new();
    let mut check = vec![format!(
        "case_id = {}",
        bind(Arg::Text(case.case_id.clone()))
    )];
    if let Some(s) = &case.state {
        set.push(format!("state = {}", bind(Arg::Text(s.state.to_owned()))));
        set.push(format!("is_open = {}", bind(Arg::Int(s.is_open))));
        set.push(format!("version = {}", bind(Arg::Int(s.version))));
        set.push(format!("review_round = {}", bind(Arg::Int(s.review_round))));
        set.push(format!(
            "reviewer = {}",
            bind(Arg::MaybeText(s.reviewer.clone()))
        ));
        set.push(format!("state_since = {}", bind(Arg::Int(s.state_since))));
        check.push(format!("version = {}", bind(Arg::Int(s.expected_version))));
    }
    if let Some(h) = &case.head {
        set.push(format!("audit_seq = {}", bind(Arg::Int(h.seq))));
        set.push(format!("audit_head = {}", bind(Arg::Text(h.hash.clone()))));
        check.push(format!("audit_seq = {}", bind(Arg::Int(h.expected_seq))));
    }
    (set.join(", "), check.join(" AND "))
}
