//! A handler's transaction: everything one delivery changes commits together or not at all —
//! the case row, its audit records, its effects, its outgoing events (outbox) and the inbox mark.
//! Writes whose outcome nothing waits on are held and sent together ([`crate::pending`]).

use crate::audit::{self, AuditRecord};
use crate::pending::{OutboxRow, Pending, StateWrite};
use crate::{Backend, StoreError};
use sqlx::{Any, AnyConnection, Row, Transaction};
use wangban_domain::clock::Clock;
use wangban_domain::events::Envelope;
use wangban_domain::ids::CaseId;
use wangban_domain::lifecycle::State;

/// A case as stored.
#[derive(Clone, Debug)]
pub struct CaseRecord {
    pub case_id: CaseId,
    pub application_id: String,
    pub document_kind: Option<String>,
    pub delivery_method: String,
    pub state: State,
    pub version: i64,
    pub review_round: i64,
    pub reviewer: Option<String>,
    /// The application JSON (personal data: never log it).
    pub application: String,
    pub created_at: i64,
    pub state_since: i64,
}

/// A case about to be opened.
#[derive(Clone, Debug)]
pub struct NewCase {
    pub case_id: CaseId,
    pub application_id: String,
    pub id_fingerprint: Option<String>,
    pub document_kind: Option<String>,
    pub delivery_method: String,
    pub application: String,
}

/// An open transaction on the store. Dropped without [`CaseTx::commit`], it rolls back.
///
/// A case's state change, audit records, outgoing events and cancelled deadlines are held
/// and sent together before the next statement of the transaction ([`CaseTx::flush`]); every
/// other method flushes first, so the transaction always reads what it wrote.
pub struct CaseTx {
    tx: Transaction<'static, Any>,
    /// Held writes; empty whenever a statement goes to the database through [`CaseTx::conn`].
    pending: Pending,
    pub(crate) backend: Backend,
    fingerprint_key: String,
    pub(crate) clock: Clock,
    /// Audit chain heads (sequence, hash) read or written in this transaction, by case: the
    /// next record needs no read. The `UPDATE` that moves a head still checks it.
    heads: std::collections::HashMap<String, (i64, String)>,
    /// `heads` as they were at the open savepoint, restored when it is rolled back to.
    saved_heads: Option<std::collections::HashMap<String, (i64, String)>>,
    /// The open savepoint is kept ([`CaseTx::release_savepoint`]): released together with the
    /// next savepoint's start, or by the commit.
    release_due: bool,
}

/// The columns of [`CaseRecord`], as a macro so queries stay `&'static str` (sqlx refuses
/// dynamic SQL strings).
macro_rules! case_columns {
    () => {
        "case_id, application_id, document_kind, delivery_method, state, version, review_round, reviewer, application, created_at, state_since"
    };
}
pub(crate) use case_columns;

pub(crate) fn case_from_row(row: &sqlx::any::AnyRow) -> Result<CaseRecord, StoreError> {
    let state: String = row.try_get("state")?;
    let case_id: String = row.try_get("case_id")?;
    Ok(CaseRecord {
        case_id: case_id.parse().map_err(StoreError::Data)?,
        application_id: row.try_get("application_id")?,
        document_kind: row.try_get("document_kind")?,
        delivery_method: row.try_get("delivery_method")?,
        state: State::parse(&state)
            .ok_or_else(|| StoreError::Data(format!("unknown state `{state}`")))?,
        version: row.try_get("version")?,
        review_round: row.try_get("review_round")?,
        reviewer: row.try_get("reviewer")?,
        application: row.try_get("application")?,
        created_at: row.try_get("created_at")?,
        state_since: row.try_get("state_since")?,
    })
}

impl CaseTx {
    pub(crate) fn new(
        tx: Transaction<'static, Any>,
        backend: Backend,
        fingerprint_key: String,
        clock: Clock,
    ) -> Self {
        CaseTx {
            tx,
            backend,
            fingerprint_key,
            clock,
            heads: Default::default(),
            saved_heads: None,
            release_due: false,
            pending: Pending::default(),
        }
    }

    /// The connection, for a statement: held writes must have been flushed (they would be
    /// missing from what it reads, or land after what it writes).
    pub(crate) fn conn(&mut self) -> &mut AnyConnection {
        debug_assert!(
            self.pending.is_empty(),
            "a statement before the held writes were flushed"
        );
        &mut self.tx
    }

    pub(crate) fn pending_unschedule(&mut self, case: &str, state: &str) {
        self.pending.unschedule(case, state);
    }

    /// Sends the held writes (one statement on PostgreSQL). A handler's delivery ends with it,
    /// so that a conflict they meet is that delivery's; savepoints and the commit flush too.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        self.pending.flush(&mut self.tx, self.backend).await
    }

    /// The store's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The backend of the store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The key for ID-number fingerprints.
    pub fn fingerprint_key(&self) -> &str {
        &self.fingerprint_key
    }

    /// Whether `consumer` already handled `event_id`.
    pub async fn inbox_contains(
        &mut self,
        consumer: &str,
        event_id: &str,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM inbox WHERE consumer = $1 AND event_id = $2")
                .bind(consumer)
                .bind(event_id)
                .fetch_one(self.conn())
                .await?;
        Ok(n > 0)
    }

    /// Claims `event_id` for `consumer` as the transaction's first statement: true when this is
    /// the first handling, false when the inbox already has it (the caller drops the
    /// transaction and acks). A concurrent handling of the same event waits on the claim and then
    /// finds it taken, so only one of them commits.
    pub async fn inbox_claim(
        &mut self,
        consumer: &str,
        event_id: &str,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        let now = self.clock.now_ms();
        let done = sqlx::query(
            "INSERT INTO inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, event_id) DO NOTHING",
        )
        .bind(consumer)
        .bind(event_id)
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Opens a case in state `submitted`, with the first audit record. `open` is false for a case
    /// that intake is about to reject (it never counts as an active application). A case for the
    /// same application, or a second open case of the same person and kind, is a conflict.
    pub async fn insert_case(
        &mut self,
        case: &NewCase,
        open: bool,
        event_id: &str,
    ) -> Result<(), StoreError> {
        self.flush().await?;
        let now = self.clock.now_ms();
        sqlx::query(
            "INSERT INTO cases (case_id, application_id, id_fingerprint, document_kind, delivery_method, state, is_open, version, review_round, reviewer, application, audit_seq, audit_head, created_at, state_since) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, NULL, $8, 0, $9, $10, $10)",
        )
        .bind(case.case_id.as_str())
        .bind(&case.application_id)
        .bind(case.id_fingerprint.as_deref())
        .bind(case.document_kind.as_deref())
        .bind(&case.delivery_method)
        .bind(State::Submitted.as_str())
        .bind(if open { 1_i64 } else { 0_i64 })
        .bind(&case.application)
        .bind(audit::GENESIS)
        .bind(now)
        .execute(self.conn())
        .await?;
        self.heads.insert(
            case.case_id.as_str().to_owned(),
            (0, audit::GENESIS.to_owned()),
        );
        let detail = serde_json::json!({
            "application_id": case.application_id,
            "document_kind": case.document_kind,
            "delivery_method": case.delivery_method,
        });
        self.append_audit(&case.case_id, "case_opened", Some(event_id), &detail)
            .await?;
        // A new case: its application is submission 1 (no need to ask).
        self.record_submission(&case.case_id, &case.application, 1)
            .await?;
        Ok(())
    }

    /// The case, if it exists, locked until this transaction ends (PostgreSQL: `FOR UPDATE`;
    /// SQLite has one writer at a time anyway). Handlers of one case's events then take turns
    /// instead of deadlocking on each other's audit and case rows, and an answer that arrives
    /// before the transaction that asked for it has committed waits for that commit instead of
    /// being retried.
    pub async fn load_case(&mut self, case_id: &CaseId) -> Result<Option<CaseRecord>, StoreError> {
        self.flush().await?;
        let sql = match self.backend {
            Backend::Postgres => concat!(
                "SELECT ",
                case_columns!(),
                ", audit_seq, audit_head FROM cases WHERE case_id = $1 FOR UPDATE"
            ),
            Backend::Sqlite => concat!(
                "SELECT ",
                case_columns!(),
                ", audit_seq, audit_head FROM cases WHERE case_id = $1"
            ),
        };
        let row = sqlx::query(sql)
            .bind(case_id.as_str())
            .fetch_optional(self.conn())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        self.heads.insert(
            case_id.as_str().to_owned(),
            (row.try_get("audit_seq")?, row.try_get("audit_head")?),
        );
        case_from_row(&row).map(Some)
    }

    /// The open case of a person (by fingerprint) for a document kind, if any.
    pub async fn open_case_for(
        &mut self,
        fingerprint: &str,
        document_kind: &str,
    ) -> Result<Option<CaseId>, StoreError> {
        self.flush().await?;
        let id: Option<String> = sqlx::query_scalar(
            "SELECT case_id FROM cases WHERE id_fingerprint = $1 AND document_kind = $2 AND is_open = 1",
        )
        .bind(fingerprint)
        .bind(document_kind)
        .fetch_optional(self.conn())
        .await?;
        id.map(|s| s.parse().map_err(StoreError::Data)).transpose()
    }

    /// Moves a case to `to` if it is still at `expected_version` (checked when the write is
    /// flushed: a concurrent change is a conflict). Also sets the reviewer and review round as
    /// given. Returns the new version and the time the case entered `to`.
    pub async fn set_state(
        &mut self,
        case: &CaseRecord,
        to: State,
        review_round: i64,
        reviewer: Option<&str>,
    ) -> Result<(i64, i64), StoreError> {
        let now = self.clock.now_ms();
        self.pending.set_state(
            case.case_id.as_str(),
            StateWrite {
                expected_version: case.version,
                version: case.version + 1,
                state: to.as_str(),
                is_open: if to.is_terminal() { 0 } else { 1 },
                review_round,
                reviewer: reviewer.map(str::to_owned),
                state_since: now,
            },
        );
        Ok((case.version + 1, now))
    }

    /// Replaces the application JSON (a resubmission's corrected content) and records its
    /// materials as the case's next submission.
    pub async fn replace_application(
        &mut self,
        case_id: &CaseId,
        application: &str,
    ) -> Result<(), StoreError> {
        self.flush().await?;
        sqlx::query("UPDATE cases SET application = $1 WHERE case_id = $2")
            .bind(application)
            .bind(case_id.as_str())
            .execute(self.conn())
            .await?;
        let next = self.next_submission(case_id).await?;
        self.record_submission(case_id, application, next).await?;
        Ok(())
    }

    /// Appends a record to the case's audit chain.
    pub async fn append_audit(
        &mut self,
        case_id: &CaseId,
        kind: &str,
        event_id: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<AuditRecord, StoreError> {
        let (seq, head): (i64, String) = match self.heads.get(case_id.as_str()) {
            Some(known) => known.clone(),
            // The chain's head is read with the case row locked, as `load_case` does: a writer
            // that read it unlocked would insert the same `seq` as the transaction holding the
            // case and deadlock with it (its insert waits for that one's audit row, that one's
            // head update for this one's).
            None => {
                self.flush().await?;
                sqlx::query_as(match self.backend {
                    Backend::Postgres => {
                        "SELECT audit_seq, audit_head FROM cases WHERE case_id = $1 FOR UPDATE"
                    }
                    Backend::Sqlite => "SELECT audit_seq, audit_head FROM cases WHERE case_id = $1",
                })
                .bind(case_id.as_str())
                .fetch_optional(self.conn())
                .await?
                .ok_or_else(|| StoreError::Data(format!("audit for unknown case {case_id}")))?
            }
        };
        let record = AuditRecord::next(
            case_id.as_str(),
            seq + 1,
            self.clock.now_ms(),
            kind,
            event_id,
            detail,
            &head,
        );
        // Written, and the head moved (checked against `seq`), when the transaction flushes.
        self.pending.append_audit(record.clone(), seq);
        self.heads.insert(
            case_id.as_str().to_owned(),
            (record.seq, record.hash.clone()),
        );
        Ok(record)
    }

    /// Records an effect; false when `(case, purpose)` was already recorded (nothing changes).
    pub async fn record_effect(
        &mut self,
        case_id: &CaseId,
        purpose: &str,
        detail: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.flush().await?;
        let now = self.clock.now_ms();
        let done = sqlx::query(
            "INSERT INTO effects (case_id, purpose, detail, at) VALUES ($1, $2, $3, $4) ON CONFLICT (case_id, purpose) DO NOTHING",
        )
        .bind(case_id.as_str())
        .bind(purpose)
        .bind(detail.to_string())
        .bind(now)
        .execute(self.conn())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The detail of a recorded effect, if any.
    pub async fn effect(
        &mut self,
        case_id: &CaseId,
        purpose: &str,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        self.flush().await?;
        let detail: Option<String> =
            sqlx::query_scalar("SELECT detail FROM effects WHERE case_id = $1 AND purpose = $2")
                .bind(case_id.as_str())
                .bind(purpose)
                .fetch_optional(self.conn())
                .await?;
        detail
            .map(|d| serde_json::from_str(&d).map_err(|e| StoreError::Data(e.to_string())))
            .transpose()
    }

    /// Queues an event for the relay of `producer` (the worker, or [`crate::HTTP_PRODUCER`]); it
    /// is published only if this transaction commits.
    pub async fn enqueue(&mut self, event: &Envelope, producer: &str) -> Result<(), StoreError> {
        let payload =
            String::from_utf8(event.encode()).map_err(|e| StoreError::Data(e.to_string()))?;
        self.pending.enqueue(OutboxRow {
            event_id: event.id.as_str().to_owned(),
            routing_key: event.routing_key(),
            payload,
            created_at: self.clock.now_ms(),
            producer: producer.to_owned(),
        });
        Ok(())
    }

    /// Marks the point [`CaseTx::rollback_to_savepoint`] returns to: one delivery of a batch
    /// begins. One savepoint is open at a time.
    pub async fn savepoint(&mut self) -> Result<(), StoreError> {
        self.flush().await?;
        let sql = match std::mem::take(&mut self.release_due) {
            true => "RELEASE SAVEPOINT delivery; SAVEPOINT delivery",
            false => "SAVEPOINT delivery",
        };
        sqlx::raw_sql(sql).execute(self.conn()).await?;
        self.saved_heads = Some(self.heads.clone());
        Ok(())
    }

    /// Keeps what was done since the savepoint (it commits with the transaction). The release
    /// itself travels with the next [`CaseTx::savepoint`] or the commit: no round trip of its own.
    pub async fn release_savepoint(&mut self) -> Result<(), StoreError> {
        self.flush().await?;
        self.release_due = true;
        self.saved_heads = None;
        Ok(())
    }

    /// Undoes everything since the savepoint, row locks taken since included; the transaction
    /// goes on (a failed statement since the savepoint no longer aborts it).
    pub async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        if self.release_due {
            // Released already: rolling back to it would undo a delivery that was kept.
            return Err(StoreError::Data("no savepoint is open".into()));
        }
        self.pending = Pending::default(); // what the failed delivery meant to write
        sqlx::raw_sql("ROLLBACK TO SAVEPOINT delivery; RELEASE SAVEPOINT delivery")
            .execute(self.conn())
            .await?;
        if let Some(heads) = self.saved_heads.take() {
            self.heads = heads;
        }
        Ok(())
    }

    /// Commits everything.
    pub async fn commit(mut self) -> Result<(), StoreError> {
        self.flush().await?;
        self.tx.commit().await?;
        Ok(())
    }
}
