//! Intake: the portal's applications enter here.
//!
//! A submission that is not a well-formed application is refused (dead-lettered with the fields
//! at fault). A well-formed one opens its case — one per `application_id`, whatever the number of
//! submissions — and is accepted or rejected with every failing reason code, including
//! `duplicate_active_application` (an open case of the same person and document kind). On
//! acceptance the held document is invalidated, exactly once and irreversibly (policy, other
//! points 4). A resubmission answers a correction request: it is validated again and, when it
//! passes, returns the case to review.

use async_trait::async_trait;
use serde_json::json;
use wangban_domain::application::Application;
use wangban_domain::eligibility::{self, ReasonCode, Rules};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::id_number::IdNumber;
use wangban_domain::ids::CaseId;
use wangban_domain::lifecycle::{State, Step};
use wangban_runtime::{Cx, Handler, HandlerError};
use wangban_store::NewCase;

/// The intake worker.
pub struct Intake {
    pub rules: Rules,
    /// Refuse applications with fields the contract does not define (default: ignore them, so
    /// the portal can extend the contract compatibly).
    pub refuse_unknown_fields: bool,
}

/// The effect purpose of the held document's invalidation.
pub const INVALIDATION: &str = "document_invalidated";

fn parse(event: &Envelope, strict: bool) -> Result<Application, HandlerError> {
    let parsed = if strict {
        Application::from_value_strict(&event.data)
    } else {
        Application::from_value(&event.data)
    };
    let app = parsed.map_err(|m| HandlerError::Permanent(m.to_string()))?;
    let case_id = CaseId::for_application(&app.application_id);
    if case_id != event.subject {
        return Err(HandlerError::Permanent(format!(
            "envelope subject is not the case of application_id (expected {case_id})"
        )));
    }
    Ok(app)
}

impl Intake {
    async fn submitted(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let app = parse(event, self.refuse_unknown_fields)?;
        let case_id = event.subject.clone();
        if let Some(existing) = cx.tx().load_case(&case_id).await? {
            // The same application again: one case per application_id; note it and move on.
            cx.audit(
                &existing,
                "duplicate_submission",
                json!({"state": existing.state}),
            )
            .await?;
            return Ok(());
        }
        let mut codes = eligibility::assess(&app, &self.rules);
        let key = cx.tx().fingerprint_key().to_owned();
        let fingerprint = IdNumber::parse(&app.applicant.id_number)
            .ok()
            .map(|id| id.fingerprint(&key));
        let kind = app.document_kind().map(|k| k.as_str().to_owned());
        if let (Some(fp), Some(k)) = (&fingerprint, &kind)
            && cx.tx().open_case_for(fp, k).await?.is_some()
        {
            codes.push(ReasonCode::DuplicateActiveApplication);
        }
        let accepted = codes.is_empty();
        let new_case = NewCase {
            case_id: case_id.clone(),
            application_id: app.application_id.to_string(),
            id_fingerprint: fingerprint,
            document_kind: kind.clone(),
            delivery_method: app.delivery.method().as_str().into(),
            application: event.data.to_string(),
        };
        let event_id = event.id.to_string();
        cx.tx().insert_case(&new_case, accepted, &event_id).await?;
        let mut case = cx.case().await?;
        if accepted {
            cx.step(&mut case, Step::Accept, json!({"document_kind": kind}))
                .await?;
            // The held document: invalidated once, irreversibly, the moment the case is accepted.
            let detail = json!({"document_kind": kind});
            if cx
                .tx()
                .record_effect(&case_id, INVALIDATION, &detail)
                .await?
            {
                cx.audit(&case, "document_invalidated", detail.clone())
                    .await?;
                cx.emit(EventType::DocumentInvalidated, detail);
            }
        } else {
            let reasons: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            cx.step(&mut case, Step::Reject, json!({"reasons": reasons}))
                .await?;
        }
        Ok(())
    }

    async fn resubmitted(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let app = parse(event, self.refuse_unknown_fields)?;
        let Some(case) = cx.tx().load_case(&event.subject).await? else {
            return Err(HandlerError::Permanent(
                "resubmission for an application with no case".into(),
            ));
        };
        if case.state != State::CorrectionRequested {
            if State::CorrectionRequested.can_reach(case.state) || case.state.is_terminal() {
                cx.audit(
                    &case,
                    "resubmission_refused",
                    json!({"state": case.state, "reason": "no correction is pending"}),
                )
                .await?;
                return Ok(());
            }
            return Err(HandlerError::Transient(format!(
                "resubmission while the case is {}",
                case.state
            )));
        }
        let stored = Cx::application(&case)?;
        if !stored
            .applicant
            .id_number
            .eq_ignore_ascii_case(&app.applicant.id_number)
            || stored.document_kind() != app.document_kind()
        {
            cx.audit(
                &case,
                "resubmission_refused",
                json!({"reason": "identity number or document kind changed"}),
            )
            .await?;
            return Ok(());
        }
        let codes = eligibility::assess(&app, &self.rules);
        if !codes.is_empty() {
            let reasons: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            cx.audit(&case, "resubmission_refused", json!({"reasons": reasons}))
                .await?;
            return Ok(());
        }
        cx.tx()
            .replace_application(&case.case_id, &event.data.to_string())
            .await?;
        cx.audit(
            &case,
            "resubmission_accepted",
            json!({"round": case.review_round + 1}),
        )
        .await?;
        cx.emit(
            EventType::CaseResubmitted,
            json!({"round": case.review_round + 1}),
        );
        Ok(())
    }
}

#[async_trait]
impl Handler for Intake {
    fn worker(&self) -> &'static str {
        "intake"
    }

    fn bindings(&self) -> Vec<String> {
        vec![
            EventType::ApplicationSubmitted.routing_key(),
            EventType::ApplicationResubmitted.routing_key(),
        ]
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.kind() {
            Some(EventType::ApplicationSubmitted) => self.submitted(cx, event).await,
            Some(EventType::ApplicationResubmitted) => self.resubmitted(cx, event).await,
            _ => Err(HandlerError::Permanent(format!(
                "intake does not handle {}",
                event.event_type
            ))),
        }
    }
}
