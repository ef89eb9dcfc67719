//! The hall desk API (`/api/hall/…`) and console (`/hall`): the staff of the exit-entry halls
//! where applicants collect their documents.
//!
//! Every call carries `Authorization: Bearer <token>`; the token's SHA-256 names one member of
//! a hall's staff in the reviewers file, who sees and acts on the documents of their halls only
//! (another hall's document is 404, as a missing one). Staff see the documents sent to the hall
//! and not yet collected; record a document's arrival (the case becomes ready for pickup and the
//! applicant gets the pickup SMS); and hand a document over only after the ID number typed or
//! scanned at the counter matches the applicant's — a mismatch is refused (422) and recorded on
//! the case's audit chain. A document ready for longer than `WANGBAN_HALL_UNCOLLECTED_DAYS` is
//! listed as uncollected, for the staff to call the applicant. Each action is one transaction
//! that locks the case, marks the document and queues the `pickup.reported` event.

use crate::AppState;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use wangban_domain::application::Application;
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::id_number::mask;
use wangban_domain::ids::{CaseId, EventId};
use wangban_domain::lifecycle::State as CaseState;
use wangban_store::{CaseTx, HallDocument, HallMember, StoreError};

use crate::{error_response as answer, internal};

/// The member of a hall's staff the request's bearer token names; a request without a known
/// token is answered 401 before any handler runs.
pub struct Staff(pub HallMember);

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Staff, Response> {
        crate::authenticate(
            parts,
            s,
            ("a hall staff", "hall staff"),
            |token| async move {
                let digest = wangban_review::desk_file::token_digest(&token);
                Ok(s.runtime.store.hall_member(&digest).await?.map(Staff))
            },
        )
        .await
    }
}

/// The staff member signed in.
/// The OpenAPI description of this API (no token needed).
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("hall_openapi.json"),
    )
        .into_response()
}

pub async fn me(Staff(m): Staff) -> Response {
    Json(json!(m)).into_response()
}

/// Where a document stands at the counter.
fn status(s: &AppState, d: &HallDocument, now: i64) -> &'static str {
    match d.arrived_at {
        None => "due",
        Some(at) if now - at > s.hall_uncollected_after.as_millis() as i64 => "uncollected",
        Some(_) => "ready",
    }
}

/// The documents of the member's halls not yet collected, oldest first: due (on their way),
/// ready (at the counter) and uncollected (ready for longer than the configured period). The
/// applicant's name is shown for the counter; the ID number and phone only masked.
pub async fn documents(State(s): State<AppState>, Staff(m): Staff) -> Response {
    let now = s.runtime.store.clock().now_ms();
    let mut rows = Vec::new();
    for hall in &m.halls {
        let docs = match s.runtime.store.hall_documents(hall).await {
            Ok(d) => d,
            Err(e) => return internal(e),
        };
        for d in docs {
            let app = Application::parse(d.application.as_bytes()).ok();
            let applicant = app.as_ref().map(|a| &a.applicant);
            rows.push(json!({
                "case_id": d.case_id, "application_id": d.application_id,
                "document_kind": d.document_kind, "state": d.state, "hall": d.hall_id,
                "status": status(&s, &d, now), "sent_at": d.sent_at, "arrived_at": d.arrived_at,
                "arrived_by": d.arrived_by,
                "applicant": applicant.map(|a| a.name.clone()),
                "id_number": applicant.map(|a| mask(&a.id_number)),
                "phone": applicant.map(|a| mask_phone(&a.phone)),
            }));
        }
    }
    let uncollected_days = s.hall_uncollected_after.as_secs() / 86_400;
    Json(
        json!({"staff": m.id, "halls": m.halls, "uncollected_after_days": uncollected_days,
                "documents": rows}),
    )
    .into_response()
}

/// A phone number with only its last four digits.
fn mask_phone(phone: &str) -> String {
    let n = phone.chars().count();
    phone
        .chars()
        .enumerate()
        .map(|(i, c)| if i + 4 < n { '*' } else { c })
        .collect()
}

/// Locks the case and its hall document, and checks the member works at its hall: the
/// transaction, the case, the document — or the answer to give.
async fn open(
    s: &AppState,
    m: &HallMember,
    raw: &str,
) -> Result<(CaseTx, wangban_store::CaseRecord, HallDocument), Response> {
    let not_found = || answer(StatusCode::NOT_FOUND, "no such document at your hall");
    let id: CaseId = raw.parse().map_err(|_| not_found())?;
    let mut tx = s.runtime.store.begin().await.map_err(internal)?;
    let case = tx.load_case(&id).await.map_err(internal)?;
    let doc = tx.hall_document(id.as_str()).await.map_err(internal)?;
    match (case, doc) {
        (Some(case), Some(doc)) if m.halls.contains(&doc.hall_id) => Ok((tx, case, doc)),
        _ => Err(not_found()),
    }
}

/// Queues `pickup.reported` with `status` (`arrived`, `collected`), the hall and the staff
/// member, commits, and answers with what was recorded.
async fn report(mut tx: CaseTx, doc: &HallDocument, status: &str, m: &HallMember) -> Response {
    let case: CaseId = match doc.case_id.parse() {
        Ok(c) => c,
        Err(e) => return internal(format!("stored case id: {e}")),
    };
    let event = Envelope::new(
        EventId::derived(&[case.as_str(), "hall", status]),
        EventType::PickupReported,
        "/wangban/hall-desk",
        tx.clock().now(),
        case,
        None,
        json!({"status": status, "hall": doc.hall_id, "by": m.id}),
    );
    if let Err(e) = tx.enqueue(&event, wangban_store::HTTP_PRODUCER).await {
        return internal(e);
    }
    match tx.commit().await {
        Ok(()) => Json(json!({"case_id": doc.case_id, "status": status, "hall": doc.hall_id}))
            .into_response(),
        Err(e) => unrecorded(e),
    }
}

fn unrecorded(e: StoreError) -> Response {
    let status = match e.is_transient() {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::INTERNAL_SERVER_ERROR,
    };
    answer(status, format!("nothing was recorded: {e}"))
}

/// Records that the document arrived at the counter: the case becomes ready for pickup.
pub async fn arrived(
    State(s): State<AppState>,
    Staff(m): Staff,
    Path(raw): Path<String>,
) -> Response {
    let (mut tx, _case, doc) = match open(&s, &m, &raw).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    match tx.mark_arrived(&doc.case_id, &m.id).await {
        Ok(true) => {}
        Ok(false) => {
            return answer(
                StatusCode::CONFLICT,
                "the document's arrival was already recorded",
            );
        }
        Err(e) => return internal(e),
    }
    report(tx, &doc, "arrived", &m).await
}

#[derive(Deserialize)]
pub struct Collection {
    /// The ID number on the identity card shown at the counter.
    id_number: String,
}

/// Hands the document over once the ID number shown at the counter is the applicant's.
pub async fn collect(
    State(s): State<AppState>,
    Staff(m): Staff,
    Path(raw): Path<String>,
    body: Result<Json<Collection>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return answer(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let shown = body.id_number.trim().to_ascii_uppercase();
    if shown.is_empty() {
        return answer(StatusCode::BAD_REQUEST, "id_number is required");
    }
    let (mut tx, case, doc) = match open(&s, &m, &raw).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if doc.arrived_at.is_none() || case.state != CaseState::ReadyForPickup {
        return answer(
            StatusCode::CONFLICT,
            format!(
                "the document is not ready for pickup (the case is {}): record its arrival first",
                case.state
            ),
        );
    }
    let applicant = match Application::parse(case.application.as_bytes()) {
        Ok(app) => app.applicant.id_number.to_ascii_uppercase(),
        Err(e) => return internal(format!("stored application: {e}")),
    };
    if !crate::constant_time_eq(shown.as_bytes(), applicant.as_bytes()) {
        // Refused and kept on the case's chain: who tried, where (never the number shown).
        let detail = json!({"hall": doc.hall_id, "by": m.id,
                            "reason": "the ID number shown does not match the applicant's"});
        let recorded = tx
            .append_audit(&case.case_id, "collection_refused", None, &detail)
            .await;
        if let Err(e) = recorded {
            return internal(e);
        }
        if let Err(e) = tx.commit().await {
            return unrecorded(e);
        }
        tracing::warn!(hall = %doc.hall_id, staff = %m.id, "collection refused: the ID number does not match");
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the ID number does not match the applicant's: the document stays at the hall",
        );
    }
    match tx.mark_collected(&doc.case_id, &m.id).await {
        Ok(true) => {}
        Ok(false) => return answer(StatusCode::CONFLICT, "the document was already handed over"),
        Err(e) => return internal(e),
    }
    report(tx, &doc, "collected", &m).await
}

#[cfg(test)]
mod tests {
    use super::mask_phone;

    #[test]
    fn a_phone_shows_its_last_four_digits() {
        assert_eq!(mask_phone("13800138000"), "*******8000");
        assert_eq!(mask_phone("123"), "123");
    }
}
