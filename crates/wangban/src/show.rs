//! Operator views of the store: a case's timeline (ID number masked) and audit verification.

use chrono::TimeZone;
use wangban_domain::application::beijing;
use wangban_domain::id_number;
use wangban_store::{CaseView, Store};

fn beijing_time(ms: i64) -> String {
    beijing().timestamp_millis_opt(ms).single().map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
    )
}

/// The case's timeline as text: a header (ID number masked) and one line per audit record.
pub fn timeline(view: &CaseView) -> String {
    let c = &view.case;
    let app: serde_json::Value = serde_json::from_str(&c.application).unwrap_or_default();
    let id = app["applicant"]["id_number"]
        .as_str()
        .map(id_number::mask)
        .unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!("case         {}\n", c.case_id));
    out.push_str(&format!("application  {}\n", c.application_id));
    out.push_str(&format!("id number    {id}\n"));
    out.push_str(&format!(
        "document     {}   delivery {}   state {}   review round {}   reviewer {}\n",
        c.document_kind.as_deref().unwrap_or("-"),
        c.delivery_method,
        c.state,
        c.review_round,
        c.reviewer.as_deref().unwrap_or("-")
    ));
    out.push_str("timeline (Beijing time)\n");
    for r in &view.audit {
        out.push_str(&format!(
            "  {:>3}  {}  {:<22} {}\n",
            r.seq,
            beijing_time(r.at),
            r.kind,
            r.detail
        ));
    }
    if !view.effects.is_empty() {
        out.push_str("effects\n");
        for (purpose, detail) in &view.effects {
            out.push_str(&format!("  {purpose:<28} {detail}\n"));
        }
    }
    out
}

/// Prints a case's timeline; false when there is no such case. `id` is a case id, an
/// application id, or an ID number (matched by its keyed digest: every case of that person).
pub async fn case(store: &Store, id: &str) -> anyhow::Result<bool> {
    if let Ok(number) = id_number::IdNumber::parse(id) {
        let cases = store
            .cases_by_fingerprint(&number.fingerprint(store.fingerprint_key()))
            .await?;
        for case_id in &cases {
            if let Some(view) = store.case_view(case_id).await? {
                print!("{}", timeline(&view));
            }
        }
        return Ok(!cases.is_empty());
    }
    match store.case_view(id).await? {
        Some(view) => {
            print!("{}", timeline(&view));
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Verifies every audit chain; prints the summary and the first break. True when all verify.
pub async fn audit(store: &Store) -> anyhow::Result<bool> {
    let report = store.verify_audit().await?;
    match report.problems.first() {
        None => {
            println!(
                "audit verified: {} cases, {} records, every chain intact",
                report.cases, report.records
            );
            Ok(true)
        }
        Some(first) => {
            println!(
                "audit BROKEN: {} of {} cases; first broken record: {first}",
                report.problems.len(),
                report.cases
            );
            Ok(false)
        }
    }
}

/// Dead letters as a table.
pub fn dead_letters(list: &[wangban_store::DeadLetter]) -> String {
    let mut out = format!(
        "{:>5}  {:<10} {:<36} {:<30} {:>4}  {:<23} {:<23} {:<8} reason\n",
        "id", "worker", "event type", "case", "n", "first failure", "last failure", "replayed"
    );
    for d in list {
        out.push_str(&format!(
            "{:>5}  {:<10} {:<36} {:<30} {:>4}  {:<23} {:<23} {:<8} {}\n",
            d.id,
            d.worker,
            d.event_type.as_deref().unwrap_or("-"),
            d.case_id.as_deref().unwrap_or("-"),
            d.failures,
            beijing_time(d.first_at),
            beijing_time(d.last_at),
            if d.replayed_at.is_some() { "yes" } else { "no" },
            d.reason
        ));
    }
    out
}
