//! The audit chain: each record's hash covers the previous record's hash and every field of its
//! own, so changing, inserting or deleting any record breaks the chain from there on; the case row
//! keeps the chain's head and length, so truncating the tail is detected too.

use crate::{Store, StoreError};
use serde::Serialize;
use sqlx::Row;

/// The `prev_hash` of a case's first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit record.
#[derive(Clone, Debug, Serialize)]
pub struct AuditRecord {
    pub case_id: String,
    pub seq: i64,
    pub at: i64,
    pub kind: String,
    pub event_id: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl AuditRecord {
    /// The record following `prev_hash`, with its hash computed.
    pub fn next(
        case_id: &str,
        seq: i64,
        at: i64,
        kind: &str,
        event_id: Option<&str>,
        detail: &serde_json::Value,
        prev_hash: &str,
    ) -> AuditRecord {
        let mut r = AuditRecord {
            case_id: case_id.into(),
            seq,
            at,
            kind: kind.into(),
            event_id: event_id.map(Into::into),
            detail: detail.to_string(),
            prev_hash: prev_hash.into(),
            hash: String::new(),
        };
        r.hash = r.expected_hash();
        r
    }

    /// The hash this record must carry.
    pub fn expected_hash(&self) -> String {
        let text = format!(
            "{}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.prev_hash,
            self.case_id,
            self.seq,
            self.at,
            self.kind,
            self.event_id.as_deref().unwrap_or(""),
            self.detail
        );
        wangban_domain::sha256_hex(text.as_bytes())
    }
}

/// A break in an audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AuditProblem {
    pub case_id: String,
    pub seq: i64,
    pub what: String,
}

impl std::fmt::Display for AuditProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "case {} record {}: {}",
            self.case_id, self.seq, self.what
        )
    }
}

/// The result of verifying every chain.
#[derive(Clone, Debug, Serialize)]
pub struct AuditReport {
    pub cases: u64,
    pub records: u64,
    /// The first break of each broken case, in case order.
    pub problems: Vec<AuditProblem>,
}

/// Checks one case's records (in `seq` order) against its stored head and length.
pub fn verify_chain(
    case_id: &str,
    records: &[AuditRecord],
    head_seq: i64,
    head: &str,
) -> Option<AuditProblem> {
    let problem = |seq: i64, what: &str| {
        Some(AuditProblem {
            case_id: case_id.into(),
            seq,
            what: what.into(),
        })
    };
    let mut prev = GENESIS.to_string();
    for (i, r) in records.iter().enumerate() {
        let want_seq = i as i64 + 1;
        if r.seq != want_seq {
            return problem(want_seq, "record missing (sequence gap)");
        }
        if r.prev_hash != prev {
            return problem(r.seq, "prev_hash does not match the previous record");
        }
        if r.hash != r.expected_hash() {
            return problem(r.seq, "hash does not match the record's content");
        }
        prev = r.hash.clone();
    }
    let last = records.len() as i64;
    if last > head_seq {
        return problem(
            head_seq + 1,
            "records beyond the case's head (added outside the chain)",
        );
    }
    if last != head_seq || prev != head {
        return problem(
            last + 1,
            "chain is shorter than the case's head (records deleted)",
        );
    }
    None
}

/// Everything the verifiers read, from one consistent snapshot of the store (a repeatable-read
/// transaction on PostgreSQL), so that a store still being written to verifies without false alarms.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// `(case id, audit length, audit head)` of every case.
    pub heads: Vec<(String, i64, String)>,
    /// `(case id, state)` of every case.
    pub states: Vec<(String, String)>,
    /// Every audit record, by case, in order.
    pub audit: std::collections::BTreeMap<String, Vec<AuditRecord>>,
    /// `(case id, purpose)` of every effect.
    pub effects: Vec<(String, String)>,
    /// `(event id, routing key, created at, published at)` of every outbox row.
    pub outbox: Vec<(String, String, i64, Option<i64>)>,
    /// `(consumer, event id)` of every handled event.
    pub inbox: std::collections::HashSet<(String, String)>,
    /// `(worker, event id)` of every dead letter with an event id.
    pub dead_letters: std::collections::HashSet<(String, String)>,
    /// The staffed desk's decisions: `(case id, round)` → the decision (`approve`,
    /// `request_correction`, `reject`; `None` while undecided). Cases of a desk outside wangban
    /// have none.
    pub desk_decisions: std::collections::BTreeMap<(String, i64), Option<String>>,
    /// The gateway order recorded with each case's fee request: case id → order id.
    pub payment_orders: std::collections::BTreeMap<String, String>,
}

impl Snapshot {
    /// Recomputes every chain of the snapshot.
    pub fn verify_chains(&self) -> AuditReport {
        let mut problems = Vec::new();
        for (case_id, seq, head) in &self.heads {
            let records = self
                .audit
                .get(case_id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            if let Some(p) = verify_chain(case_id, records, *seq, head) {
                problems.push(p);
            }
        }
        let known: std::collections::BTreeSet<&String> =
            self.heads.iter().map(|(c, _, _)| c).collect();
        for (case_id, records) in &self.audit {
            if !known.contains(case_id) {
                problems.push(AuditProblem {
                    case_id: case_id.clone(),
                    seq: records.first().map_or(0, |r| r.seq),
                    what: "audit records for a case that does not exist".into(),
                });
            }
        }
        AuditReport {
            cases: self.heads.len() as u64,
            records: self.audit.values().map(Vec::len).sum::<usize>() as u64,
            problems,
        }
    }
}

impl Store {
    /// Recomputes every chain.
    pub async fn verify_audit(&self) -> Result<AuditReport, StoreError> {
        Ok(self.snapshot().await?.verify_chains())
    }

    /// Reads cases, audit and effects in one consistent snapshot.
    pub async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == crate::Backend::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        let heads: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT case_id, audit_seq, audit_head FROM cases ORDER BY case_id")
                .fetch_all(&mut *tx)
                .await?;
        let states: Vec<(String, String)> =
            sqlx::query_as("SELECT case_id, state FROM cases ORDER BY case_id")
                .fetch_all(&mut *tx)
                .await?;
        let rows = sqlx::query(
            "SELECT case_id, seq, at, kind, event_id, detail, prev_hash, hash FROM audit ORDER BY case_id, seq",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut audit: std::collections::BTreeMap<String, Vec<AuditRecord>> = Default::default();
        for row in &rows {
            let r = record_from_row(row)?;
            audit.entry(r.case_id.clone()).or_default().push(r);
        }
        let effects: Vec<(String, String)> = sqlx::query_as("SELECT case_id, purpose FROM effects")
            .fetch_all(&mut *tx)
            .await?;
        let outbox: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT event_id, routing_key, created_at, published_at FROM outbox ORDER BY id",
        )
        .fetch_all(&mut *tx)
        .await?;
        let inbox: Vec<(String, String)> = sqlx::query_as("SELECT consumer, event_id FROM inbox")
            .fetch_all(&mut *tx)
            .await?;
        let dead: Vec<(String, String)> =
            sqlx::query_as("SELECT worker, event_id FROM dead_letters WHERE event_id IS NOT NULL")
                .fetch_all(&mut *tx)
                .await?;
        let decisions: Vec<(String, i64, Option<String>)> =
            sqlx::query_as("SELECT case_id, round, decision FROM review_tasks")
                .fetch_all(&mut *tx)
                .await?;
        let orders: Vec<(String, String)> =
            sqlx::query_as("SELECT case_id, detail FROM effects WHERE purpose = 'payment_order'")
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(Snapshot {
            payment_orders: orders
                .into_iter()
                .filter_map(|(case, detail)| {
                    let d: serde_json::Value = serde_json::from_str(&detail).ok()?;
                    Some((case, d["gateway_order_id"].as_str()?.to_owned()))
                })
                .collect(),
            heads,
            states,
            audit,
            effects,
            outbox,
            inbox: inbox.into_iter().collect(),
            dead_letters: dead.into_iter().collect(),
            desk_decisions: decisions
                .into_iter()
                .map(|(case, round, decision)| ((case, round), decision))
                .collect(),
        })
    }

    /// A case's audit records, in order.
    pub async fn audit_of(&self, case_id: &str) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT case_id, seq, at, kind, event_id, detail, prev_hash, hash FROM audit WHERE case_id = $1 ORDER BY seq",
        )
        .bind(case_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }
}

pub(crate) fn record_from_row(row: &sqlx::any::AnyRow) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        case_id: row.try_get("case_id")?,
        seq: row.try_get("seq")?,
        at: row.try_get("at")?,
        kind: row.try_get("kind")?,
        event_id: row.try_get("event_id")?,
        detail: row.try_get("detail")?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        for seq in 1..=n {
            let prev = out.last().map_or(GENESIS.to_string(), |r| r.hash.clone());
            out.push(AuditRecord::next(
                "case_a",
                seq,
                seq * 10,
                "k",
                None,
                &serde_json::json!({"n": seq}),
                &prev,
            ));
        }
        out
    }

    #[test]
    fn an_intact_chain_verifies() {
        let c = chain(4);
        assert_eq!(verify_chain("case_a", &c, 4, &c[3].hash), None);
    }

    #[test]
    fn every_kind_of_tampering_is_named() {
        let c = chain(4);
        let head = c[3].hash.clone();
        let mut edited = c.clone();
        edited[1].detail = "{\"n\":99}".into();
        assert_eq!(verify_chain("case_a", &edited, 4, &head).unwrap().seq, 2);
        let mut gap = c.clone();
        gap.remove(2);
        assert_eq!(verify_chain("case_a", &gap, 4, &head).unwrap().seq, 3);
        let truncated = c[..3].to_vec();
        assert!(
            verify_chain("case_a", &truncated, 4, &head)
                .unwrap()
                .what
                .contains("shorter")
        );
        let mut relinked = c.clone();
        relinked[2].prev_hash = GENESIS.into();
        relinked[2].hash = relinked[2].expected_hash();
        assert_eq!(verify_chain("case_a", &relinked, 4, &head).unwrap().seq, 3);
    }
}
