//! The review dispatcher: manual review (人工审核) by the reviewers of the applicant's hukou
//! district. An accepted case goes to the desk for round 1; a resubmission goes back for the next
//! round, to the reviewer who asked for the correction where possible. The desk's decisions —
//! approve, request a correction, reject — move the case; a decision for a round that is over is
//! refused and recorded.

use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_providers::{ReviewDesk, ReviewTask};
use wangban_runtime::{Cx, Handler, HandlerError};

/// The review dispatcher.
pub struct Review {
    pub desk: Arc<dyn ReviewDesk>,
}

impl Review {
    /// Hands round `round` of the case to the desk and moves the case to `under_review`.
    async fn dispatch(&self, cx: &mut Cx<'_>, step: Step, round: i64) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        let expected = step.edge().0[0];
        if case.state != expected {
            // Already dispatched (a repeated event) or never will be: let the lifecycle decide.
            cx.step(&mut case, step, json!({"round": round})).await?;
            return Ok(());
        }
        let app = Cx::application(&case)?;
        let task = ReviewTask {
            idempotency_key: format!("{}:review:{round}", case.case_id),
            case_id: case.case_id.clone(),
            application_id: case.application_id.clone(),
            hukou_region: app.applicant.hukou_region.clone(),
            round,
            preferred_reviewer: case.reviewer.clone(),
        };
        let assignment = self.desk.assign(&task).await?;
        let detail = json!({"round": round, "reviewer": assignment.reviewer});
        cx.tx()
            .record_effect(
                &case.case_id,
                &format!("review_assignment:{round}"),
                &detail,
            )
            .await?;
        cx.step_with(&mut case, step, detail, round, Some(assignment.reviewer))
            .await?;
        Ok(())
    }

    async fn decided(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let d = &event.data;
        let decision = d.get("decision").and_then(Value::as_str).unwrap_or("");
        let round = d.get("round").and_then(Value::as_i64);
        let mut case = cx.case().await?;
        if case.state == State::Accepted
            || (round.is_some_and(|r| r > case.review_round) && !case.state.is_terminal())
        {
            return Err(HandlerError::Transient(
                "decision arrived before its review round started".into(),
            ));
        }
        if round != Some(case.review_round) || case.state != State::UnderReview {
            cx.audit(
                &case,
                "decision_refused",
                json!({"round": round, "current_round": case.review_round, "state": case.state}),
            )
            .await?;
            return Ok(());
        }
        let reviewer = d.get("reviewer").cloned().unwrap_or(Value::Null);
        let (step, detail) = match decision {
            "approve" => (Step::Approve, json!({"reviewer": reviewer})),
            "request_correction" => {
                let items = d.get("items").cloned().unwrap_or(json!([]));
                let message = d.get("message").cloned().unwrap_or(json!(""));
                if items.as_array().is_none_or(|a| a.is_empty()) {
                    return Err(HandlerError::Permanent(
                        "request_correction must name the items to fix".into(),
                    ));
                }
                (
                    Step::RequestCorrection,
                    json!({"reviewer": reviewer, "items": items, "message": message}),
                )
            }
            "reject" => {
                let reason = d.get("reason").and_then(Value::as_str).unwrap_or("");
                if reason.is_empty() {
                    return Err(HandlerError::Permanent("reject must give a reason".into()));
                }
                (
                    Step::RejectReview,
                    json!({"reviewer": reviewer, "reason": reason}),
                )
            }
            other => {
                return Err(HandlerError::Permanent(format!(
                    "unknown review decision `{}`",
                    other.chars().take(32).collect::<String>()
                )));
            }
        };
        cx.step(&mut case, step, detail).await?;
        Ok(())
    }
}

#[async_trait]
impl Handler for Review {
    fn worker(&self) -> &'static str {
        "review"
    }

    fn bindings(&self) -> Vec<String> {
        [
            EventType::Entered(State::Accepted),
            EventType::CaseResubmitted,
            EventType::ReviewDecided,
        ]
        .iter()
        .map(|t| t.routing_key())
        .collect()
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.kind() {
            Some(EventType::Entered(State::Accepted)) => {
                self.dispatch(cx, Step::StartReview, 1).await
            }
            Some(EventType::CaseResubmitted) => {
                let round = event.data.get("round").and_then(Value::as_i64).unwrap_or(2);
                self.dispatch(cx, Step::Resubmit, round).await
            }
            Some(EventType::ReviewDecided) => self.decided(cx, event).await,
            _ => Err(HandlerError::Permanent(format!(
                "review does not handle {}",
                event.event_type
            ))),
        }
    }
}
