//! The reviewer API (`/api/review/…`) and console (`/review`): the staffed review desk.
//!
//! Every call carries `Authorization: Bearer <token>`; the token's SHA-256 names one reviewer of
//! the reviewers file, and a reviewer sees and decides only the cases of the offices they review
//! (or, for escalated cases, supervise). A decision is taken in one transaction that locks the
//! case, marks its task decided and queues the `review.decided` event: of two reviewers deciding
//! one case at once, exactly one wins; the other gets 409 and nothing changes. The description
//! of every endpoint is served at `/api/review/openapi.json`.

use crate::AppState;
use axum::Json;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::id_number::mask;
use wangban_domain::ids::{CaseId, EventId};
use wangban_domain::lifecycle::State as CaseState;
use wangban_domain::review::correction_item_zh;
use wangban_store::{DeskMember, Task};

use crate::{error_response as answer, internal};

/// The reviewer the request's bearer token names; a request without a known token is answered
/// 401 before any handler runs.
pub struct Reviewer(pub DeskMember);

impl FromRequestParts<AppState> for Reviewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Reviewer, Response> {
        crate::authenticate(parts, s, ("a reviewer", "reviewer"), |token| async move {
            let digest = wangban_review::desk_file::token_digest(&token);
            Ok(s.runtime.store.desk_member(&digest).await?.map(Reviewer))
        })
        .await
    }
}

macro_rules! case_id {
    ($raw:expr) => {
        match $raw.parse::<CaseId>() {
            Ok(id) => id,
            Err(_) => return answer(StatusCode::NOT_FOUND, "no such case"),
        }
    };
}

/// The reviewer signed in.
pub async fn me(Reviewer(m): Reviewer) -> Response {
    Json(json!(m)).into_response()
}

#[derive(Deserialize)]
pub struct Availability {
    available: bool,
}

/// Takes new assignments, or stops taking them.
pub async fn availability(
    State(s): State<AppState>,
    Reviewer(m): Reviewer,
    Json(body): Json<Availability>,
) -> Response {
    match s.runtime.store.set_available(&m.id, body.available).await {
        Ok(()) => Json(json!({"reviewer": m.id, "available": body.available})).into_response(),
        Err(e) => internal(e),
    }
}

/// A task as a reviewer's list shows it: with the application id and the review clock's due date.
fn task_row(s: &AppState, t: &Task) -> Value {
    let opened = wangban_domain::application::beijing_date(t.opened_at);
    let due = s
        .calendar
        .add_working_days(opened, s.review_working_days)
        .ok()
        .map(|d| d.to_string());
    json!({"case_id": t.case_id, "application_id": t.application_id, "round": t.round, "office": t.office_id,
           "queue": t.queue, "opened_at": t.opened_at, "assigned_at": t.assigned_at, "due": due})
}

/// The open tasks the reviewer holds.
pub async fn tasks(State(s): State<AppState>, Reviewer(m): Reviewer) -> Response {
    let held = match s.runtime.store.tasks_held_by(&m.id).await {
        Ok(t) => t,
        Err(e) => return internal(e),
    };
    let rows: Vec<Value> = held.iter().map(|t| task_row(&s, t)).collect();
    Json(json!({"reviewer": m.id, "tasks": rows})).into_response()
}

/// Takes the oldest waiting task the reviewer may take: 200 with it, or 204 when none waits.
pub async fn claim(State(s): State<AppState>, Reviewer(m): Reviewer) -> Response {
    match s.runtime.store.claim_next(&m).await {
        Ok(Some(t)) => Json(task_row(&s, &t)).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(e) if e.is_transient() => answer(StatusCode::CONFLICT, e),
        Err(e) => internal(e),
    }
}

/// Puts a task the reviewer holds back in its queue.
pub async fn release(
    State(s): State<AppState>,
    Reviewer(m): Reviewer,
    Path(raw): Path<String>,
) -> Response {
    match s.runtime.store.release_task(&m.id, &raw).await {
        Ok(true) => Json(json!({"released": raw})).into_response(),
        Ok(false) => answer(
            StatusCode::CONFLICT,
            "you hold no open review task of this case",
        ),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
pub struct Reveal {
    reveal: Option<String>,
}

/// `task` if `m` may see it: 404 without one, 403 when it is in a queue not theirs.
/// The task of a case the member may see. A case of an office they do not work for is answered
/// exactly as a case that does not exist (404), so probing ids tells nothing; one of their office
/// outside their queues (escalated to its supervisor) is 403.
fn visible(m: &DeskMember, task: Option<Task>) -> Result<Task, (StatusCode, &'static str)> {
    const NOT_FOUND: (StatusCode, &str) = (StatusCode::NOT_FOUND, "no such case in your offices");
    match task {
        None => Err(NOT_FOUND),
        Some(t) if !m.works_for(&t.office_id) => Err(NOT_FOUND),
        Some(t) if !m.may_act_on(&t.office_id, &t.queue) => Err((
            StatusCode::FORBIDDEN,
            "this case is in its office's supervisor queue",
        )),
        Some(t) => Ok(t),
    }
}

/// Every review round of the case, once, and the latest if `m` may see it (else the answer).
async fn rounds_seen(
    s: &AppState,
    m: &DeskMember,
    id: &CaseId,
) -> Result<(Vec<Task>, Task), Response> {
    let rounds = s
        .runtime
        .store
        .tasks_of(id.as_str())
        .await
        .map_err(internal)?;
    let task = visible(m, rounds.last().cloned()).map_err(|(status, e)| answer(status, e))?;
    Ok((rounds, task))
}

/// The application without its personal data: what a reviewer who no longer (or not yet) holds
/// the case's task may see.
fn without_personal_data(application: &Value) -> Value {
    let keep = |v: &Value, fields: &[&str]| -> Value {
        fields
            .iter()
            .filter_map(|f| v.get(*f).map(|x| (f.to_string(), x.clone())))
            .collect::<serde_json::Map<String, Value>>()
            .into()
    };
    json!({
        "application_id": application["application_id"],
        "submitted_at": application["submitted_at"],
        "reason": application["reason"],
        "in_mainland": application["in_mainland"],
        "applicant": keep(&application["applicant"], &["category", "hukou_region"]),
        "document": keep(&application["document"], &["kind", "expires_on", "fingerprints_on_file"]),
        "delivery": keep(&application["delivery"], &["method"]),
        "materials": application["materials"],
    })
}

/// A case for review: the application with the ID number masked (`?reveal=id_number` shows it
/// and records who saw it), its review rounds and the corrections asked so far.
pub async fn case(
    State(s): State<AppState>,
    Reviewer(m): Reviewer,
    Path(raw): Path<String>,
    Query(q): Query<Reveal>,
) -> Response {
    let id = case_id!(raw);
    let (rounds, task) = match rounds_seen(&s, &m, &id).await {
        Ok(seen) => seen,
        Err(r) => return r,
    };
    let reveal = match q.reveal.as_deref() {
        None => false,
        Some("id_number") => true,
        Some(_) => return answer(StatusCode::BAD_REQUEST, "`reveal` may only be `id_number`"),
    };
    let personal = m.may_see_personal_data(&task);
    if reveal && !personal {
        return answer(
            StatusCode::FORBIDDEN,
            "personal data is shown only to the reviewer holding the case's open task",
        );
    }
    let view = match s.runtime.store.case_view(id.as_str()).await {
        Ok(Some(v)) => v,
        Ok(None) => return answer(StatusCode::NOT_FOUND, "no such case in your offices"),
        Err(e) => return internal(e),
    };
    let mut application: Value = serde_json::from_str(&view.case.application).unwrap_or_default();
    if !personal {
        application = without_personal_data(&application);
    } else {
        // Every view of personal data is on the case's record: who, and whether in full.
        if let Err(e) = record_view(&s, &m, &id, reveal).await {
            return internal(e);
        }
        if !reveal
            && let Some(n) = application.pointer_mut("/applicant/id_number")
            && let Some(raw) = n.as_str()
        {
            *n = json!(mask(raw));
        }
    }
    // Steps the case took (a refused resubmission, `transition_refused`, changed nothing).
    let corrections: Vec<Value> = view
        .audit
        .iter()
        .filter(|a| a.kind == "transition")
        .filter_map(|a| serde_json::from_str::<Value>(&a.detail).ok())
        .filter(|d| d["step"] == "request_correction" || d["step"] == "resubmit")
        .map(|d| json!({"step": d["step"], "detail": d["detail"]}))
        .collect();
    // What each accepted resubmission changed (names of items only).
    let resubmissions: Vec<Value> = view
        .audit
        .iter()
        .filter(|a| a.kind == "resubmission_accepted")
        .filter_map(|a| serde_json::from_str::<Value>(&a.detail).ok())
        .map(|d| json!({"round": d["round"], "changed": d.get("changed").cloned().unwrap_or(json!([]))}))
        .collect();
    // Every file of every submission, for the console to fetch (only with personal data).
    let files = match personal {
        true => match s.runtime.store.case_materials(id.as_str()).await {
            Ok(f) => json!(f),
            Err(e) => return internal(e),
        },
        false => json!([]),
    };
    Json(json!({
        "case_id": id.as_str(), "application_id": view.case.application_id, "state": view.case.state,
        "round": view.case.review_round, "task": task, "rounds": rounds, "corrections": corrections,
        "resubmissions": resubmissions, "files": files, "materials_store": s.materials.is_some(),
        "photo_guide": wangban_domain::materials::HEAD_GUIDE,
        "max_rounds": s.review_max_rounds, "application": application,
        "personal_data": personal,
    }))
    .into_response()
}

/// One file an applicant uploaded for the case (any submission's, named by its SHA-256), as its
/// bytes: only to the reviewer who may see the case's personal data, each view on the case's
/// record (`material_viewed`), never cached. A stored file that does not hash to its name is
/// never served: 502, logged by name and listed for operators (`/api/ops/materials`).
pub async fn material(
    State(s): State<AppState>,
    Reviewer(m): Reviewer,
    Path((raw, name)): Path<(String, String)>,
) -> Response {
    const NO_SUCH: &str = "no such material of this case";
    let id = case_id!(raw);
    let task = match rounds_seen(&s, &m, &id).await {
        Ok((_, task)) => task,
        Err(r) => return r,
    };
    if !m.may_see_personal_data(&task) {
        return answer(
            StatusCode::FORBIDDEN,
            "materials are shown only to the reviewer holding the case's open task",
        );
    }
    let Ok(name) = wangban_materials::checked_name(&name) else {
        return answer(StatusCode::NOT_FOUND, NO_SUCH);
    };
    let named = match s.runtime.store.case_materials(id.as_str()).await {
        Ok(all) => all.into_iter().find(|f| f.sha256 == name),
        Err(e) => return internal(e),
    };
    let Some(file) = named else {
        return answer(StatusCode::NOT_FOUND, NO_SUCH);
    };
    let Some(store) = &s.materials else {
        return answer(
            StatusCode::NOT_FOUND,
            "this deployment has no materials store (WANGBAN_MATERIALS_DIR or WANGBAN_MATERIALS_S3_BUCKET)",
        );
    };
    let bytes = match store.get(&name).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            return answer(
                StatusCode::NOT_FOUND,
                format!(
                    "the materials store has no file {name} (never uploaded, or erased by retention)"
                ),
            );
        }
        Err(wangban_materials::MaterialError::Integrity { .. }) => {
            tracing::error!(material = %name, store = %store.describe(), "a stored material does not hash to its name");
            if let Err(e) = s
                .runtime
                .store
                .record_material_problem(&name, id.as_str(), "review")
                .await
            {
                tracing::warn!(error = %e, "recording a material problem");
            }
            return answer(
                StatusCode::BAD_GATEWAY,
                format!("the stored file {name} does not hash to its name; operators are told"),
            );
        }
        Err(e) if e.is_transient() => {
            let mut r = answer(StatusCode::SERVICE_UNAVAILABLE, e);
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
            return r;
        }
        Err(e) => return answer(StatusCode::BAD_GATEWAY, e),
    };
    let detail =
        json!({"reviewer": m.id, "material": file.material, "submission": file.submission});
    if let Err(e) = record(&s, &id, "material_viewed", &detail).await {
        return internal(e);
    }
    let content_type = wangban_domain::materials::inspect(&bytes)
        .content_type
        .unwrap_or("application/octet-stream");
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
            (header::CONTENT_DISPOSITION, "inline"),
        ],
        bytes,
    )
        .into_response()
}

async fn record_view(
    s: &AppState,
    m: &DeskMember,
    id: &CaseId,
    revealed: bool,
) -> Result<(), wangban_store::StoreError> {
    let (kind, detail) = if revealed {
        ("id_number_revealed", json!({"reviewer": m.id}))
    } else {
        (
            "personal_data_viewed",
            json!({"reviewer": m.id, "id_number": "masked"}),
        )
    };
    record(s, id, kind, &detail).await
}

/// Appends `kind` to the case's record.
async fn record(
    s: &AppState,
    id: &CaseId,
    kind: &str,
    detail: &Value,
) -> Result<(), wangban_store::StoreError> {
    let mut tx = s.runtime.store.begin().await?;
    if tx.load_case(id).await?.is_some() {
        tx.append_audit(id, kind, None, detail).await?;
    }
    tx.commit().await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    decision: String,
    #[serde(default)]
    items: Vec<String>,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
}

impl Decision {
    /// The event data of a well-formed decision, or what is wrong with it.
    fn data(&self) -> Result<Value, String> {
        // Each decision carries its own fields and no other's (the OpenAPI `Decision` shapes).
        let stray = |fields: &[(&str, bool)]| {
            fields
                .iter()
                .find(|(_, given)| *given)
                .map(|(name, _)| format!("`{name}` does not belong to {}", self.decision))
        };
        let (items, message, reason) = (
            ("items", !self.items.is_empty()),
            ("message", !self.message.is_empty()),
            ("reason", !self.reason.is_empty()),
        );
        let not_mine = match self.decision.as_str() {
            "approve" => stray(&[items, message, reason]),
            "request_correction" => stray(&[reason]),
            "reject" => stray(&[items, message]),
            _ => None,
        };
        if let Some(why) = not_mine {
            return Err(why);
        }
        match self.decision.as_str() {
            "approve" => Ok(json!({"decision": "approve"})),
            "request_correction" => {
                if self.items.is_empty() {
                    return Err("request_correction needs `items`: what to fix".into());
                }
                if let Some(bad) = self.items.iter().find(|i| correction_item_zh(i).is_none()) {
                    let known: Vec<&str> = wangban_domain::review::CORRECTION_ITEMS
                        .iter()
                        .map(|(n, _)| *n)
                        .collect();
                    return Err(format!(
                        "unknown correction item `{}` (known: {})",
                        bad.chars().take(40).collect::<String>(),
                        known.join(", ")
                    ));
                }
                if self.message.chars().count() > 200 {
                    return Err("`message` is longer than 200 characters".into());
                }
                Ok(
                    json!({"decision": "request_correction", "items": self.items, "message": self.message}),
                )
            }
            "reject" => {
                if self.reason.trim().is_empty() {
                    return Err("reject needs a `reason`".into());
                }
                if self.reason.chars().count() > 200 {
                    return Err("`reason` is longer than 200 characters".into());
                }
                Ok(json!({"decision": "reject", "reason": self.reason}))
            }
            other => Err(format!(
                "`decision` must be approve, request_correction or reject, not `{}`",
                other.chars().take(32).collect::<String>()
            )),
        }
    }
}

/// Decides the case's current review round.
pub async fn decide(
    State(s): State<AppState>,
    Reviewer(m): Reviewer,
    Path(raw): Path<String>,
    body: Result<Json<Decision>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let id = case_id!(raw);
    let Json(decision) = match body {
        Ok(b) => b,
        Err(e) => return answer(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let mut data = match decision.data() {
        Ok(d) => d,
        Err(e) => return answer(StatusCode::BAD_REQUEST, e),
    };
    match decide_in_tx(&s, &m, &id, &mut data).await {
        Ok(round) => Json(
            json!({"case_id": id.as_str(), "round": round, "decision": data["decision"],
                                 "reviewer": m.id}),
        )
        .into_response(),
        Err(r) => r,
    }
}

async fn decide_in_tx(
    s: &AppState,
    m: &DeskMember,
    id: &CaseId,
    data: &mut Value,
) -> Result<i64, Response> {
    let mut tx = s.runtime.store.begin().await.map_err(internal)?;
    let Some(case) = tx.load_case(id).await.map_err(internal)? else {
        return Err(answer(StatusCode::NOT_FOUND, "no such case"));
    };
    let round = case.review_round;
    let task = tx.task(id.as_str(), round).await.map_err(internal)?;
    let task = visible(m, task).map_err(|(s, e)| answer(s, e))?;
    if let Some(d) = &task.decision {
        return Err(answer(
            StatusCode::CONFLICT,
            format!("round {round} was already decided ({d}); the case has moved on"),
        ));
    }
    if case.state != CaseState::UnderReview {
        return Err(answer(
            StatusCode::CONFLICT,
            format!("the case is {}, not under review", case.state),
        ));
    }
    let supervises = m.supervises.contains(&task.office_id);
    if task.reviewer.as_deref() != Some(m.id.as_str()) && !supervises {
        return Err(answer(
            StatusCode::CONFLICT,
            "another reviewer holds this task (claim it when it is released)",
        ));
    }
    if data["decision"] == "request_correction" && round >= s.review_max_rounds {
        return Err(answer(
            StatusCode::CONFLICT,
            format!(
                "round {round} is the last of {}: approve or reject",
                s.review_max_rounds
            ),
        ));
    }
    let decision = data["decision"].as_str().unwrap_or_default().to_owned();
    if !tx
        .decide_task(id.as_str(), round, &m.id, &decision)
        .await
        .map_err(internal)?
    {
        return Err(answer(
            StatusCode::CONFLICT,
            format!("round {round} was decided meanwhile"),
        ));
    }
    data["round"] = json!(round);
    data["reviewer"] = json!(m.id);
    let event = Envelope::new(
        EventId::derived(&[id.as_str(), "review", &round.to_string()]),
        EventType::ReviewDecided,
        "/wangban/review-desk",
        s.runtime.store.clock().now(),
        id.clone(),
        None,
        data.clone(),
    );
    tx.enqueue(&event, wangban_store::HTTP_PRODUCER)
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(|e| {
        let status = match e.is_transient() {
            true => StatusCode::SERVICE_UNAVAILABLE,
            false => StatusCode::INTERNAL_SERVER_ERROR,
        };
        answer(status, format!("the decision was not recorded: {e}"))
    })?;
    Ok(round)
}

/// Open tasks per office and queue (operators; also shown to reviewers of the office).
pub async fn queues(State(s): State<AppState>, Reviewer(m): Reviewer) -> Response {
    match s.runtime.store.desk_queues().await {
        Ok(rows) => {
            let rows: Vec<Value> = rows
                .into_iter()
                .filter(|(office, queue, _, _)| m.may_act_on(office, queue))
                .map(|(office, queue, open, waiting)| {
                    json!({"office": office, "queue": queue, "open": open, "waiting": waiting})
                })
                .collect();
            Json(json!({"queues": rows})).into_response()
        }
        Err(e) => internal(e),
    }
}

/// The OpenAPI description of the reviewer API.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("review_openapi.json"),
    )
        .into_response()
}
