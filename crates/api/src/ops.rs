//! The operations API behind the dashboard and for scripts. Every handler checks the operator
//! token first. Responses never carry an ID number in the clear, a name, a phone or an address.

use crate::{AppState, Operator, error_response as answer, internal, sla};
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use wangban_domain::id_number::{IdNumber, mask};

/// The case named by `id` (case or application id), or the answer when there is none.
async fn case_view(
    store: &wangban_store::Store,
    id: &str,
) -> Result<wangban_store::CaseView, Response> {
    match store.case_view(id).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err((
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no such case"})),
        )
            .into_response()),
        Err(e) => Err(internal(e)),
    }
}

/// Depth and consumers of every worker queue and dead-letter queue, from the broker, and what
/// this process handled.
pub async fn queues(State(s): State<AppState>, _: Operator) -> Response {
    // Rates over the last minute, across every process, from what the workers committed.
    let last_minute = s
        .runtime
        .store
        .handled_since(s.runtime.store.clock().now_ms() - 60_000)
        .await
        .unwrap_or_default();
    let mut rows = Vec::new();
    for w in &s.topology.workers {
        let stats = s.runtime.bus.stats(&w.worker).await;
        let (ready, consumers, dead, error) = match stats {
            Ok(st) => (
                json!(st.ready),
                json!(st.consumers),
                json!(st.dead_letters),
                Value::Null,
            ),
            Err(e) => (Value::Null, Value::Null, Value::Null, json!(e.to_string())),
        };
        rows.push(json!({
            "worker": w.worker,
            "queue": s.topology.queue(&w.worker),
            "dead_letter_queue": s.topology.dead_letter_queue(&w.worker),
            "ready": ready, "consumers": consumers, "dead_letters_ready": dead, "error": error,
            "handled_here": s.runtime.metrics.consumed_total(&w.worker, "handled"),
            "handled_per_s": last_minute.get(&w.worker).copied().unwrap_or(0) as f64 / 60.0,
            "dead_lettered_here": s.runtime.metrics.consumed_total(&w.worker, "dead_lettered"),
        }));
    }
    Json(json!({"queues": rows, "outbox_backlog": s.runtime.store.outbox_backlog().await.ok()}))
        .into_response()
}

#[derive(Deserialize)]
pub struct WorkerFilter {
    worker: Option<String>,
}

impl WorkerFilter {
    /// The worker named, checked against the topology: `Err` says which workers there are.
    fn checked(&self, s: &AppState) -> Result<Option<&str>, String> {
        let Some(worker) = self.worker.as_deref() else {
            return Ok(None);
        };
        let workers: Vec<&str> = s
            .topology
            .workers
            .iter()
            .map(|w| w.worker.as_str())
            .collect();
        if workers.contains(&worker) {
            Ok(Some(worker))
        } else {
            Err(format!(
                "unknown worker: `worker` is one of {}",
                workers.join(", ")
            ))
        }
    }
}

/// Dead letters, newest first.
pub async fn dead_letters(
    State(s): State<AppState>,
    _: Operator,
    Query(q): Query<WorkerFilter>,
) -> Response {
    let worker = match q.checked(&s) {
        Ok(w) => w,
        Err(why) => return answer(StatusCode::BAD_REQUEST, why),
    };
    match s.runtime.store.dead_letters(worker).await {
        Ok(list) => Json(json!({"dead_letters": list})).into_response(),
        Err(e) => internal(e),
    }
}

/// Replays one dead letter into its worker's queue.
pub async fn replay_one(State(s): State<AppState>, _: Operator, Path(id): Path<i64>) -> Response {
    match s.runtime.replay_dead_letter(id).await {
        Ok(true) => Json(json!({"replayed": [id]})).into_response(),
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": format!("no unreplayed dead letter {id}")})),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

/// Replays every unreplayed dead letter of a worker (`?worker=` is required: all of one queue).
pub async fn replay_all(
    State(s): State<AppState>,
    _: Operator,
    Query(q): Query<WorkerFilter>,
) -> Response {
    let worker = match q.checked(&s) {
        Ok(Some(w)) => w,
        Ok(None) => return answer(StatusCode::BAD_REQUEST, "name the worker: ?worker=intake"),
        Err(why) => return answer(StatusCode::BAD_REQUEST, why),
    };
    let ids = match s.runtime.store.unreplayed_dead_letters(Some(worker)).await {
        Ok(ids) => ids,
        Err(e) => return internal(e),
    };
    let mut replayed = Vec::new();
    for id in ids {
        match s.runtime.replay_dead_letter(id).await {
            Ok(true) => replayed.push(id),
            Ok(false) => {}
            Err(e) => return internal(format!("replayed {replayed:?}, then failed on {id}: {e}")),
        }
    }
    Json(json!({"replayed": replayed})).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    q: String,
}

/// Finds cases by case id, application id, or ID number (matched by its keyed digest).
pub async fn search(
    State(s): State<AppState>,
    _: Operator,
    Json(body): Json<SearchBody>,
) -> Response {
    let q = body.q.trim();
    if q.contains('\0') {
        return answer(StatusCode::BAD_REQUEST, "`q` contains a NUL character");
    }
    if body.q.chars().count() > 200 {
        return answer(StatusCode::BAD_REQUEST, "`q` is longer than 200 characters");
    }
    let store = &s.runtime.store;
    let ids: Vec<String> = if let Ok(id) = IdNumber::parse(q) {
        match store
            .cases_by_fingerprint(&id.fingerprint(store.fingerprint_key()))
            .await
        {
            Ok(ids) => ids,
            Err(e) => return internal(e),
        }
    } else {
        match store.case_view(q).await {
            Ok(Some(v)) => vec![v.case.case_id.to_string()],
            Ok(None) => vec![],
            Err(e) => return internal(e),
        }
    };
    let mut found = Vec::new();
    for id in ids {
        if let Ok(Some(v)) = store.case_view(&id).await {
            found.push(json!({"case_id": v.case.case_id, "application_id": v.case.application_id, "state": v.case.state}));
        }
    }
    let shown = if IdNumber::parse(q).is_ok() {
        mask(q)
    } else {
        q.to_owned()
    };
    Json(json!({"query": shown, "cases": found})).into_response()
}

/// A case with its whole timeline — audit records, retries, dead letters — and whether its audit
/// chain verifies.
pub async fn case(State(s): State<AppState>, _: Operator, Path(id): Path<String>) -> Response {
    let store = &s.runtime.store;
    let view = match case_view(store, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let case_id = view.case.case_id.to_string();
    let app: Value = serde_json::from_str(&view.case.application).unwrap_or_default();
    let mut timeline: Vec<Value> = view
        .audit
        .iter()
        .map(|r| {
            let detail: Value = serde_json::from_str(&r.detail).unwrap_or(Value::Null);
            json!({"at": r.at, "source": "audit", "seq": r.seq, "kind": r.kind, "event_id": r.event_id, "detail": detail})
        })
        .collect();
    if let Ok(retries) = store.retries_of(&case_id).await {
        timeline.extend(retries.into_iter().map(|r| {
            json!({"at": r.at, "source": "retry", "kind": "retry",
                   "detail": {"worker": r.worker, "event_type": r.event_type, "attempt": r.attempt, "error": r.error}})
        }));
    }
    if let Ok(dead) = store.dead_letters(None).await {
        timeline.extend(dead.into_iter().filter(|d| d.case_id.as_deref() == Some(case_id.as_str())).map(|d| {
            json!({"at": d.last_at, "source": "dead_letter", "kind": "dead_letter",
                   "detail": {"id": d.id, "worker": d.worker, "event_type": d.event_type, "reason": d.reason, "replayed_at": d.replayed_at}})
        }));
    }
    timeline.sort_by_key(|e| e["at"].as_i64().unwrap_or(0));
    let effects: Vec<Value> = store
        .effect_commands_of(&case_id)
        .await
        .unwrap_or_default()
        .iter()
        .map(effect_json)
        .collect();
    let chain = store.verify_case(&case_id).await;
    let (chain_ok, chain_problem) = match &chain {
        Ok(None) => (true, Value::Null),
        Ok(Some(p)) => (false, json!(p.to_string())),
        Err(e) => (false, json!(e.to_string())),
    };
    // The policy's promise (7 working days from acceptance to issue, waiting not counted).
    let entries: Vec<(wangban_domain::lifecycle::State, i64)> = view
        .audit
        .iter()
        .filter(|r| r.kind == "transition")
        .filter_map(|r| {
            let d: Value = serde_json::from_str(&r.detail).ok()?;
            Some((
                wangban_domain::lifecycle::State::parse(d["to"].as_str()?)?,
                r.at,
            ))
        })
        .collect();
    let promise = match wangban_domain::promise::clock(
        &entries,
        s.runtime.store.clock().now_ms(),
        &s.calendar,
    ) {
        Ok(Some(c)) => json!({"working_days": wangban_domain::promise::WORKING_DAYS,
            "counted": c.counted, "paused": c.paused, "completed": c.completed,
            "broken": c.broken(wangban_domain::promise::WORKING_DAYS)}),
        Ok(None) => Value::Null,
        Err(e) => json!({"error": e.to_string()}),
    };
    let c = &view.case;
    Json(json!({
        "promise": promise,
        "case": {
            "case_id": c.case_id, "application_id": c.application_id, "state": c.state,
            "document_kind": c.document_kind, "delivery_method": c.delivery_method,
            "id_number": app["applicant"]["id_number"].as_str().map(mask),
            "review_round": c.review_round, "reviewer": c.reviewer,
        },
        "chain_ok": chain_ok,
        "chain_problem": chain_problem,
        "timeline": timeline,
        "effects": effects,
        "deadlines": store.scheduled_for(&case_id).await.unwrap_or_default(),
    }))
    .into_response()
}

/// An effect command as operators see it: its key, party, state, attempts and last error (the
/// command itself stays in the store: an SMS's rendered text is the applicant's business).
fn effect_json(c: &wangban_store::EffectCommand) -> Value {
    json!({"case_id": c.case_id, "purpose": c.purpose, "party": c.party, "state": c.state,
           "attempts": c.attempts, "last_error": c.last_error, "next_attempt_at": c.not_before,
           "requested_at": c.created_at, "updated_at": c.updated_at})
}

#[derive(Deserialize)]
pub struct EffectFilter {
    state: Option<String>,
}

/// Effects not carried out: `?state=dead` (the default: given up, waiting for an operator) or
/// `?state=pending` (still being tried), oldest change first; with counts per party and state.
pub async fn effects(
    State(s): State<AppState>,
    _: Operator,
    Query(q): Query<EffectFilter>,
) -> Response {
    let state = q.state.unwrap_or_else(|| "dead".into());
    if !["dead", "pending"].contains(&state.as_str()) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "state must be `dead` or `pending`"})),
        )
            .into_response();
    }
    let store = &s.runtime.store;
    let (list, counts) = match (
        store.effect_commands_in(&state, 500).await,
        store.effect_counts_by_party().await,
    ) {
        (Ok(l), Ok(c)) => (l, c),
        (Err(e), _) | (_, Err(e)) => return internal(e),
    };
    let counts: Vec<Value> = counts
        .by_party
        .iter()
        .map(|(p, st, n)| json!({"party": p, "state": st, "count": n}))
        .collect();
    Json(json!({"effects": list.iter().map(effect_json).collect::<Vec<_>>(), "counts": counts}))
        .into_response()
}

/// Retries a dead effect: pending again, from its first attempt; its executor carries it out
/// under the same idempotency key.
pub async fn retry_effect(
    State(s): State<AppState>,
    _: Operator,
    Path((case_id, purpose)): Path<(String, String)>,
) -> Response {
    match s.runtime.store.revive_effect(&case_id, &purpose).await {
        Ok(true) => {
            Json(json!({"retried": {"case_id": case_id, "purpose": purpose}})).into_response()
        }
        Ok(false) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "no dead effect with that case and purpose"})),
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

/// Cases past a promise, by promise.
pub async fn sla(State(s): State<AppState>, _: Operator) -> Response {
    match sla::breaches(&s).await {
        Ok(b) => Json(json!(b)).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    hours: Option<i64>,
}

/// Cases per state over time (samples taken by `wangban serve`), plus the current counts.
pub async fn history(
    State(s): State<AppState>,
    _: Operator,
    Query(q): Query<HistoryQuery>,
) -> Response {
    let hours = q.hours.unwrap_or(24);
    if !(1..=24 * 30).contains(&hours) {
        return answer(StatusCode::BAD_REQUEST, "`hours` is 1 to 720");
    }
    let since = s.runtime.store.clock().now_ms() - hours * 3_600_000;
    let samples = match s.runtime.store.state_history(since).await {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let now = s.runtime.store.count_by_state().await.unwrap_or_default();
    Json(json!({"samples": samples, "now": now})).into_response()
}

/// A case's payment: the fee order, every payment the gateway reported and what became of it,
/// refunds due, and payments for its reference that matched no case.
pub async fn payment(State(s): State<AppState>, _: Operator, Path(id): Path<String>) -> Response {
    let store = &s.runtime.store;
    let view = match case_view(store, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let parse = |d: &str| serde_json::from_str::<Value>(d).unwrap_or(Value::Null);
    let effect = |purpose: &str| {
        view.effects
            .iter()
            .find(|(p, _)| p == purpose)
            .map(|(_, d)| parse(d))
    };
    let refunds: Vec<Value> = view
        .effects
        .iter()
        .filter(|(p, _)| p.starts_with("refund_due:"))
        .map(|(_, d)| parse(d))
        .collect();
    let payments: Vec<Value> = view
        .audit
        .iter()
        .filter_map(|r| {
            let d = parse(&r.detail);
            let outcome = match r.kind.as_str() {
                "transition" if d["step"] == "confirm_payment" => "confirmed",
                "payment_refused" => "refused_for_refund",
                "payment_after_expiry" => "after_expiry_for_refund",
                "payment_unmatched" => "other_order_for_refund",
                "payment_not_completed" => "not_completed",
                _ => return None,
            };
            let detail = if r.kind == "transition" {
                d["detail"].clone()
            } else {
                d
            };
            Some(
                json!({"at": r.at, "outcome": outcome, "payment_id": detail["payment_id"],
                        "amount_cny": detail["amount_cny"], "status": detail["status"]}),
            )
        })
        .collect();
    let reference = format!("{}:fee", view.case.case_id);
    let unmatched = match store.unmatched_payments(Some(&reference)).await {
        Ok(u) => u,
        Err(e) => return internal(e),
    };
    let c = &view.case;
    let status = if payments.iter().any(|p| p["outcome"] == "confirmed") {
        "paid"
    } else if c.state == wangban_domain::lifecycle::State::PaymentExpired {
        "expired"
    } else if effect("payment_order").is_some() {
        "awaiting"
    } else {
        "not_requested"
    };
    Json(json!({
        "case_id": c.case_id, "state": c.state,
        "status": status,
        "order": effect("payment_order"),
        "payments": payments,
        "refunds_due": refunds,
        "unmatched": unmatched,
    }))
    .into_response()
}

/// Money to give back: refunds due on cases (wrong amount, paid after the window) and payments
/// that matched no case.
pub async fn refunds(State(s): State<AppState>, _: Operator) -> Response {
    let store = &s.runtime.store;
    let due = match store.effects_with_purpose_prefix("refund_due:").await {
        Ok(d) => d,
        Err(e) => return internal(e),
    };
    let unmatched = match store.unmatched_payments(None).await {
        Ok(u) => u,
        Err(e) => return internal(e),
    };
    let due: Vec<Value> = due
        .into_iter()
        .map(|(case, detail)| {
            let mut d = serde_json::from_str::<Value>(&detail).unwrap_or(Value::Null);
            d["case_id"] = json!(case);
            d
        })
        .collect();
    Json(json!({"refunds_due": due, "unmatched_payments": unmatched})).into_response()
}

/// Stored files that did not hash to their names (integrity errors) in the last 7 days, most
/// recent first: each by name, with the case it was read for, where it was read (`intake` or
/// `review`), when first and last, and how often. Such a file is never used: intake counts it
/// missing and the reviewer API does not serve it. An operator restores it from the applicant's
/// upload (or asks for a correction); the entry ages out a week after the last failed read.
pub async fn materials(State(s): State<AppState>, _: Operator) -> Response {
    let since = s.runtime.store.clock().now_ms() - 7 * 86_400_000;
    match s.runtime.store.material_problems(since, 200).await {
        Ok(problems) => Json(json!({
            "store": s.materials.as_ref().map(|m| m.describe()),
            "since": since,
            "integrity_errors": problems,
        }))
        .into_response(),
        Err(e) => internal(e),
    }
}

/// The operators' delivery queue: shipments the courier could not deliver, on cases still
/// `shipped` (the courier tries again, or an operator returns the document to the hall with
/// [`return_to_hall`]), and documents that came back and are not yet at the hall.
pub async fn delivery_problems(State(s): State<AppState>, _: Operator) -> Response {
    let store = &s.runtime.store;
    let (shipped, returned, problems) = match tokio::try_join!(
        store.cases_in_state("shipped"),
        store.cases_in_state("returned"),
        store.audit_of_kind("delivery_problem"),
    ) {
        Ok(all) => all,
        Err(e) => return internal(e),
    };
    let shipped: std::collections::HashSet<String> = shipped.into_iter().map(|(c, _)| c).collect();
    let open: Vec<Value> = problems
        .into_iter()
        .filter(|r| shipped.contains(&r.case_id))
        .map(|r| {
            let d = serde_json::from_str::<Value>(&r.detail).unwrap_or(Value::Null);
            json!({"case_id": r.case_id, "at": r.at, "status": d["status"], "waybill": d["waybill"],
                   "actions": [format!("POST /api/ops/cases/{}/return-to-hall", r.case_id)]})
        })
        .collect();
    let returned: Vec<Value> = returned
        .into_iter()
        .map(|(case_id, since)| json!({"case_id": case_id, "since": since, "next": "the hall of the household registration takes it; the applicant is told by SMS"}))
        .collect();
    Json(json!({"open": open, "returned": returned})).into_response()
}

/// An operator returns a shipped document to the hall of the applicant's household registration
/// (the courier gave up after failed attempts): the same path as a document the courier sent
/// back — `returned`, an SMS, then `ready_for_pickup` at the hall. Repeating it changes nothing.
pub async fn return_to_hall(
    State(s): State<AppState>,
    _: Operator,
    Path(id): Path<String>,
) -> Response {
    let view = match case_view(&s.runtime.store, &id).await {
        Ok(v) => v,
        Err(r) => return r,
    };
    let state = view.case.state;
    if state != wangban_domain::lifecycle::State::Shipped {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": format!("only a shipped document can be returned to the hall; the case is {state}")})),
        )
            .into_response();
    }
    let waybill = view
        .effects
        .iter()
        .find(|(purpose, _)| purpose == "shipment")
        .and_then(|(_, d)| serde_json::from_str::<Value>(d).ok())
        .map_or(Value::Null, |d| d["waybill"].clone());
    let case = view.case.case_id.clone();
    let event = wangban_runtime::ingress::event(
        s.runtime.store.clock(),
        wangban_domain::events::EventType::CourierReported,
        "/ops",
        &case,
        Some(wangban_domain::ids::EventId::derived(&[
            "ops-return",
            case.as_str(),
        ])),
        json!({"status": "returned", "waybill": waybill, "by": "operator"}),
    );
    match s.runtime.queue_ingress(&event).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(json!({"returning": case.as_str(), "waybill": waybill})),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": format!("the bus did not take it: {e}")})),
        )
            .into_response(),
    }
}

/// The review desk's queues: open tasks per office and queue, how many wait for a reviewer, and
/// each reviewer's load (empty without a reviewers file).
pub async fn review_desk(State(s): State<AppState>, _: Operator) -> Response {
    let store = &s.runtime.store;
    let (queues, load) = match tokio::try_join!(store.desk_queues(), store.reviewer_load()) {
        Ok(both) => both,
        Err(e) => return internal(e),
    };
    let queues: Vec<Value> = queues
        .into_iter()
        .map(|(office, queue, open, waiting)| {
            json!({"office": office, "queue": queue, "open": open, "waiting": waiting})
        })
        .collect();
    let reviewers: Vec<Value> = load
        .into_iter()
        .map(|(reviewer, available, open)| {
            json!({"reviewer": reviewer, "available": available, "open": open})
        })
        .collect();
    Json(json!({"queues": queues, "reviewers": reviewers})).into_response()
}

/// The OpenAPI description of the operations API (no token needed to read it).
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("ops_openapi.json"),
    )
        .into_response()
}
