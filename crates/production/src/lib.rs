//! Card production: when the fee is paid, the order goes to the card-production centre, which has
//! 3 working days (policy, process 4) on the working-day calendar. The worker asks for the order;
//! the centre's executor places it after the commit, and once the centre has accepted it the case
//! is in production, with the due date recorded; completion records whether the promise was kept.

use async_trait::async_trait;
use serde_json::{Value, json};
use wangban_domain::application::beijing;
use wangban_domain::calendar::WorkingCalendar;
use wangban_domain::effects::{Effect, EffectReport, Party};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_runtime::{Cx, Handler, HandlerError};

/// The card-production worker.
pub struct Production {
    pub calendar: WorkingCalendar,
    /// Working days the centre has (3).
    pub promise_working_days: u32,
}

fn today() -> chrono::NaiveDate {
    chrono::Utc::now().with_timezone(&beijing()).date_naive()
}

impl Production {
    /// A paid case: ask the centre for a production order.
    async fn paid(&self, cx: &mut Cx<'_>) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        if case.state != State::Paid {
            cx.step(&mut case, Step::OrderProduction, json!({})).await?;
            return Ok(());
        }
        let document_kind = case.document_kind.clone().unwrap_or_default();
        cx.request(&case, &Effect::ProductionOrder { document_kind })
            .await?;
        Ok(())
    }

    /// The centre accepted the order: the case is in production, due in 3 working days.
    async fn ordered(&self, cx: &mut Cx<'_>, report: &EffectReport) -> Result<(), HandlerError> {
        let centre_order_id = report
            .text("centre_order_id")
            .map_err(HandlerError::Permanent)?;
        let mut case = cx.case().await?;
        // A year missing from the calendar must be seen, not guessed: the order still goes out,
        // and the missing due date is in the audit record and the log.
        let due = match self
            .calendar
            .add_working_days(today(), self.promise_working_days)
        {
            Ok(d) => json!(d.to_string()),
            Err(e) => {
                tracing::error!(error = %e, "cannot compute the production due date");
                json!({"error": e.to_string()})
            }
        };
        let d = json!({"centre_order_id": centre_order_id, "due": due});
        if case.state == State::Paid {
            cx.tx()
                .record_effect(&case.case_id, "production_order", &d)
                .await?;
        }
        cx.step(&mut case, Step::OrderProduction, d).await?;
        Ok(())
    }

    async fn reported(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        let status = event
            .data
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("");
        if status != "produced" {
            cx.audit(&case, "production_status", json!({"status": status}))
                .await?;
            return Ok(());
        }
        let order = cx.tx().effect(&case.case_id, "production_order").await?;
        let due = order
            .as_ref()
            .and_then(|o| o.get("due"))
            .and_then(Value::as_str)
            .and_then(|d| d.parse().ok());
        let late = due.map(|d: chrono::NaiveDate| today() > d);
        let number = event
            .data
            .get("document_number")
            .cloned()
            .unwrap_or(Value::Null);
        cx.step(
            &mut case,
            Step::CompleteProduction,
            json!({"document_number": number, "late": late}),
        )
        .await?;
        Ok(())
    }
}

#[async_trait]
impl Handler for Production {
    fn worker(&self) -> &'static str {
        "production"
    }

    fn bindings(&self) -> Vec<String> {
        vec![
            EventType::Entered(State::Paid).routing_key(),
            EventType::ProductionReported.routing_key(),
            EventType::EffectDone(Party::Production).routing_key(),
        ]
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.kind() {
            Some(EventType::Entered(State::Paid)) => self.paid(cx).await,
            Some(EventType::ProductionReported) => self.reported(cx, event).await,
            Some(EventType::EffectDone(Party::Production)) => {
                self.ordered(cx, &Cx::report(event)?).await
            }
            _ => Err(HandlerError::Permanent(format!(
                "production does not handle {}",
                event.event_type
            ))),
        }
    }
}
