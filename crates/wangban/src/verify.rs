//! `wangban verify`: an invariant checker independent of the workers. It reads only the store and
//! checks what must hold whatever happened — crashes, redeliveries, replays:
//! - every case is in a lifecycle state, and its recorded transitions are a path of the diagram
//!   from `submitted` that ends in that state;
//! - every audit chain verifies;
//! - exactly one invalidation per accepted case, none for a rejected one;
//! - every effect matches the lifecycle: a payment order for each case that awaited payment, one
//!   production order for each case produced or in production, one shipment for each shipped case,
//!   one pickup notice for each case ready for pickup — and none for a case that never got there;
//! - every event the workers committed is accounted for: published, and handled (or dead-lettered)
//!   by every worker whose queue it routes to — once it is older than a grace period, since the
//!   pipeline may still be working on the newest ones.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use wangban_bus::{WorkerQueue, topic_matches};
use wangban_domain::lifecycle::{State, Step};
use wangban_store::Store;

/// What was checked and what was found.
#[derive(Debug, Serialize)]
pub struct Verification {
    pub cases: usize,
    pub audit_records: u64,
    pub effects: usize,
    pub outbox_backlog: i64,
    /// Effects requested and not carried out yet.
    pub effects_pending: i64,
    /// Effects given up on, waiting for an operator's retry.
    pub effects_dead: i64,
    pub unreplayed_dead_letters: usize,
    /// Committed events checked for being handled (older than the grace period).
    pub events_accounted: usize,
    pub violations: Vec<String>,
}

/// The effect a case must have once it has entered `state`.
const EFFECT_OF_STATE: [(State, &str); 5] = [
    (State::Accepted, "document_invalidated"),
    (State::AwaitingPayment, "payment_order"),
    (State::InProduction, "production_order"),
    (State::Shipped, "shipment"),
    (State::ReadyForPickup, "pickup_notice"),
];

/// Runs every check; events younger than `grace` are not yet required to be handled.
pub async fn check(
    store: &Store,
    queues: &[WorkerQueue],
    grace: std::time::Duration,
) -> anyhow::Result<Verification> {
    let mut violations = Vec::new();
    // One consistent snapshot: the pipeline may still be running.
    let snapshot = store.snapshot().await?;
    let audit = snapshot.verify_chains();
    violations.extend(audit.problems.iter().map(|p| format!("audit chain: {p}")));
    let records = &snapshot.audit;
    let all_effects = &snapshot.effects;
    let mut effects: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (case, purpose) in all_effects {
        effects
            .entry(case.clone())
            .or_default()
            .insert(purpose.clone());
    }
    let cases = &snapshot.states;
    for (case, state) in cases {
        let Some(state) = State::parse(state) else {
            violations.push(format!(
                "case {case}: state `{state}` is not in the lifecycle"
            ));
            continue;
        };
        // Replay the recorded transitions through the state machine.
        let mut at = State::Submitted;
        let mut entered = BTreeSet::from([State::Submitted]);
        // A case the staffed desk reviewed: each decision step needs the decision the desk
        // recorded for its round (a decision that never went through the reviewer API did not).
        let staffed = snapshot
            .desk_decisions
            .range((case.clone(), i64::MIN)..=(case.clone(), i64::MAX))
            .next()
            .is_some();
        let mut round = 0_i64;
        for r in records
            .get(case)
            .into_iter()
            .flatten()
            .filter(|r| r.kind == "transition")
        {
            let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();
            let step = Step::ALL
                .iter()
                .find(|s| Some(s.as_str()) == detail["step"].as_str());
            let to = detail["to"].as_str().and_then(State::parse);
            match (step, to) {
                (Some(step), Some(to)) if at.apply(*step) == Ok(to) => {
                    if matches!(step, Step::StartReview | Step::Resubmit) {
                        round += 1;
                    }
                    let decided = match step {
                        Step::Approve => Some("approve"),
                        Step::RequestCorrection => Some("request_correction"),
                        Step::RejectReview => Some("reject"),
                        _ => None,
                    };
                    // A payment is confirmed only for the order recorded with the fee request.
                    if *step == Step::ConfirmPayment
                        && let Some(paid_for) = detail["detail"]["gateway_order_id"].as_str()
                        && snapshot.payment_orders.get(case).map(String::as_str) != Some(paid_for)
                    {
                        violations.push(format!(
                            "case {case} record {}: payment confirmed for gateway order {paid_for}, not the case's fee order ({})",
                            r.seq,
                            snapshot.payment_orders.get(case).map_or("none", String::as_str)
                        ));
                    }
                    if let Some(decided) = decided.filter(|_| staffed) {
                        let key = (case.clone(), round);
                        let recorded = snapshot.desk_decisions.get(&key).cloned().flatten();
                        if recorded.as_deref() != Some(decided) {
                            violations.push(format!(
                                "case {case} record {}: {decided} in review round {round} without that decision at the desk (it recorded {})",
                                r.seq,
                                recorded.as_deref().unwrap_or("none")
                            ));
                        }
                    }
                    at = to;
                    entered.insert(to);
                }
                _ => violations.push(format!(
                    "case {case} record {}: transition {} is not allowed from {at}",
                    r.seq, detail
                )),
            }
        }
        if at != state {
            violations.push(format!(
                "case {case}: its transitions end in {at} but the case is {state}"
            ));
        }
        let mine = effects.get(case).cloned().unwrap_or_default();
        for (needed_after, purpose) in EFFECT_OF_STATE {
            let reached = entered.contains(&needed_after);
            let has = mine.contains(purpose);
            if reached && !has {
                violations.push(format!(
                    "case {case}: entered {needed_after} but has no {purpose}"
                ));
            }
            if has && !reached {
                violations.push(format!(
                    "case {case}: has {purpose} but never entered {needed_after}"
                ));
            }
        }
    }
    // Every committed event: published, and handled or dead-lettered by each worker it routes to.
    let horizon = store.clock().now_ms() - grace.as_millis() as i64;
    for (event, key, created, published) in &snapshot.outbox {
        if *created > horizon {
            continue;
        }
        if published.is_none() {
            violations.push(format!(
                "event {event} ({key}) was committed but never published"
            ));
            continue;
        }
        for q in queues
            .iter()
            .filter(|q| q.bindings.iter().any(|b| topic_matches(b, key)))
        {
            let handled = (q.worker.clone(), event.clone());
            if !snapshot.inbox.contains(&handled) && !snapshot.dead_letters.contains(&handled) {
                violations.push(format!(
                    "event {event} ({key}) was never handled nor dead-lettered by {}",
                    q.worker
                ));
            }
        }
    }
    let known: BTreeSet<&String> = cases.iter().map(|(c, _)| c).collect();
    for case in effects.keys().filter(|c| !known.contains(c)) {
        violations.push(format!(
            "effects recorded for a case that does not exist: {case}"
        ));
    }
    let effect_counts = store.effect_counts_by_party().await?.by_party;
    let open_effects = |wanted: &str| -> i64 {
        effect_counts
            .iter()
            .filter(|(_, state, _)| state == wanted)
            .map(|(_, _, n)| n)
            .sum()
    };
    Ok(Verification {
        cases: cases.len(),
        audit_records: audit.records,
        effects: all_effects.len(),
        outbox_backlog: store.outbox_backlog().await?,
        effects_pending: open_effects("pending"),
        effects_dead: open_effects("dead"),
        unreplayed_dead_letters: store.unreplayed_dead_letters(None).await?.len(),
        events_accounted: snapshot
            .outbox
            .iter()
            .filter(|(_, _, created, _)| *created <= horizon)
            .count(),
        violations,
    })
}
