//! Card production: when the fee is paid, the order goes to the card-production centre, which has
//! 3 working days (policy, process 4) on the working-day calendar. The worker asks for the order;
//! the centre's executor places it after the commit, and once the centre has accepted it the case
//! is in production, with the due date recorded; completion records whether the promise was kept.
//!
//! The policy is [`Production::decide`], a pure function of the case, the event ([`Input`]),
//! the recorded order's due date and today; the handler loads those, decides and applies.

use async_trait::async_trait;
use chrono::NaiveDate;
use serde_json::{Value, json};
use wangban_domain::calendar::WorkingCalendar;
use wangban_domain::effects::{Effect, EffectReport, Party};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_runtime::{CaseRecord, Cx, Decision, Handler, HandlerError};

/// The card-production worker.
pub struct Production {
    pub calendar: WorkingCalendar,
    /// Working days the centre has (3).
    pub promise_working_days: u32,
}

/// What the production worker consumes, decoded from the event.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The fee was paid.
    Paid,
    /// The centre accepted the production order.
    Ordered(EffectReport),
    /// The centre reported the order's status; `produced` carries the new document number.
    Reported {
        status: String,
        document_number: Value,
    },
}

impl Input {
    /// Decodes the event; what does not decode is a permanent error naming the field.
    pub fn decode(event: &Envelope) -> Result<Input, String> {
        let d = &event.data;
        match event.kind() {
            Some(EventType::Entered(State::Paid)) => Ok(Input::Paid),
            Some(EventType::EffectDone(Party::Production)) => {
                Ok(Input::Ordered(EffectReport::from_data(d)?))
            }
            Some(EventType::ProductionReported) => Ok(Input::Reported {
                status: d
                    .get("status")
                    .and_then(Value::as_str)
                    .ok_or("production report needs a status")?
                    .chars()
                    .take(32)
                    .collect(),
                document_number: d.get("document_number").cloned().unwrap_or(Value::Null),
            }),
            _ => Err(format!("production does not handle {}", event.event_type)),
        }
    }
}

/// The due date a recorded production order carries, if it has one.
pub fn due_of(order: Option<&Value>) -> Option<NaiveDate> {
    order?.get("due")?.as_str()?.parse().ok()
}

impl Production {
    /// What the production worker does with `input` for `case`, `today`, given the due date of
    /// the order recorded for it (`order_due`).
    pub fn decide(
        &self,
        case: &CaseRecord,
        input: &Input,
        order_due: Option<NaiveDate>,
        today: NaiveDate,
    ) -> Result<Decision, String> {
        Ok(match input {
            Input::Paid if case.state == State::Paid => {
                let document_kind = case.document_kind.clone().unwrap_or_default();
                Decision::request(Effect::ProductionOrder { document_kind })
            }
            // Already ordered (a repeated event), or early: the lifecycle decides.
            Input::Paid => Decision::step(Step::OrderProduction, json!({})),
            Input::Ordered(report) => {
                if !matches!(report.command, Effect::ProductionOrder { .. }) {
                    return Err(format!("production asked for no effect {}", report.purpose));
                }
                let centre_order_id = report.text("centre_order_id")?;
                // A year missing from the calendar must be seen, not guessed: the order stands,
                // and the missing due date is in the audit record.
                let due = match self
                    .calendar
                    .add_working_days(today, self.promise_working_days)
                {
                    Ok(d) => json!(d.to_string()),
                    Err(e) => json!({"error": e.to_string()}),
                };
                let d = json!({"centre_order_id": centre_order_id, "due": due});
                let decision = Decision::step(Step::OrderProduction, d.clone());
                if case.state == State::Paid {
                    decision.recording("production_order", d)
                } else {
                    decision
                }
            }
            Input::Reported {
                status,
                document_number,
            } if status == "produced" => {
                let late = order_due.map(|d| today > d);
                // The new document's number is personal data: only its last two characters are
                // kept, on the record and in every event after this one.
                let masked = match document_number.as_str() {
                    Some(n) => json!(wangban_domain::id_number::mask(n)),
                    None => Value::Null,
                };
                Decision::step(
                    Step::CompleteProduction,
                    json!({"document_number": masked, "late": late}),
                )
            }
            Input::Reported { status, .. } => {
                Decision::audit("production_status", json!({"status": status}))
            }
        })
    }
}

#[async_trait]
impl Handler for Production {
    fn worker(&self) -> &'static str {
        "production"
    }

    fn steps(&self) -> Vec<Step> {
        vec![Step::OrderProduction, Step::CompleteProduction]
    }

    fn emits(&self) -> Vec<EventType> {
        vec![]
    }

    fn bindings(&self) -> Vec<String> {
        vec![
            EventType::Entered(State::Paid).routing_key(),
            EventType::ProductionReported.routing_key(),
            EventType::EffectDone(Party::Production).routing_key(),
        ]
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let input = Input::decode(event).map_err(HandlerError::Permanent)?;
        let mut case = cx.case().await?;
        let order_due = match input {
            Input::Reported { .. } => {
                let order = cx.tx().effect(&case.case_id, "production_order").await?;
                due_of(order.as_ref())
            }
            _ => None,
        };
        let decision = self
            .decide(&case, &input, order_due, cx.tx().clock().today())
            .map_err(HandlerError::Permanent)?;
        if let Some((_, detail)) = &decision.step
            && detail.pointer("/due/error").is_some()
        {
            tracing::error!(
                "cannot compute the production due date: a year is missing from the calendar"
            );
        }
        cx.apply(&mut case, decision).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wangban_domain::effects::Outcome;

    use wangban_runtime::case_in as case;

    /// The worker with the default calendar and the policy's 3 working days.
    fn worker() -> Production {
        Production {
            calendar: WorkingCalendar::default(),
            promise_working_days: 3,
        }
    }

    /// What, the case's state, the input, the recorded due date, today, the decision.
    type Row = (
        &'static str,
        State,
        Input,
        Option<NaiveDate>,
        NaiveDate,
        Decision,
    );

    fn date(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn ordered(result: Value) -> Input {
        let command = Effect::ProductionOrder {
            document_kind: "passport".into(),
        };
        Input::Ordered(EffectReport {
            purpose: command.purpose(),
            command,
            outcome: Outcome::Done { result },
        })
    }

    fn produced() -> Input {
        Input::Reported {
            status: "produced".into(),
            document_number: json!("E12345678"),
        }
    }

    #[test]
    fn every_event_it_consumes_decides_on_the_working_day_calendar() {
        use State::*;
        let worker = worker();
        let order = |due: &str| json!({"centre_order_id": "C1", "due": due});
        // Friday 25 Sep 2026: three working days later is Wednesday 30 Sep (before National Day).
        let friday = date("2026-09-25");
        // Wednesday 30 Sep 2026: three working days later, across the National Day holiday
        // (1–7 Oct), is the make-up working Saturday 10 Oct (Thu 8, Fri 9, Sat 10).
        let before_holiday = date("2026-09-30");
        #[rustfmt::skip]
        let table: Vec<Row> = vec![
            ("paid: order", Paid, Input::Paid, None, friday,
                Decision::request(Effect::ProductionOrder { document_kind: "passport".into() })),
            ("paid again once in production: the lifecycle refuses", InProduction, Input::Paid, None, friday,
                Decision::step(Step::OrderProduction, json!({}))),
            ("paid before approval (out of order): the lifecycle waits", Approved, Input::Paid, None, friday,
                Decision::step(Step::OrderProduction, json!({}))),
            ("ordered on a Friday: due in 3 working days", Paid, ordered(json!({"centre_order_id": "C1"})), None, friday,
                Decision::step(Step::OrderProduction, order("2026-09-30")).recording("production_order", order("2026-09-30"))),
            ("ordered before National Day: due after it", Paid, ordered(json!({"centre_order_id": "C1"})), None, before_holiday,
                Decision::step(Step::OrderProduction, order("2026-10-10")).recording("production_order", order("2026-10-10"))),
            ("ordered again (late duplicate): step only", InProduction, ordered(json!({"centre_order_id": "C1"})), None, friday,
                Decision::step(Step::OrderProduction, order("2026-09-30"))),
            ("produced on time", InProduction, produced(), Some(date("2026-09-30")), date("2026-09-30"),
                Decision::step(Step::CompleteProduction, json!({"document_number": "*******78", "late": false}))),
            ("produced late", InProduction, produced(), Some(date("2026-09-30")), date("2026-10-08"),
                Decision::step(Step::CompleteProduction, json!({"document_number": "*******78", "late": true}))),
            ("produced before the order was recorded: the lifecycle waits, lateness unknown", Paid, produced(), None, friday,
                Decision::step(Step::CompleteProduction, json!({"document_number": "*******78", "late": null}))),
            ("another status: recorded only", InProduction, Input::Reported { status: "queued".into(), document_number: Value::Null },
                None, friday, Decision::audit("production_status", json!({"status": "queued"}))),
        ];
        for (what, state, input, due, today, expected) in table {
            assert_eq!(
                worker.decide(&case(state), &input, due, today).unwrap(),
                expected,
                "{what}"
            );
        }
        assert!(
            Paid.apply(Step::CompleteProduction)
                .is_err_and(|r| r.may_succeed_later())
        );
        assert!(
            InProduction
                .apply(Step::OrderProduction)
                .is_err_and(|r| !r.may_succeed_later())
        );
    }

    #[test]
    fn a_year_missing_from_the_calendar_is_recorded_not_guessed() {
        let worker = worker();
        let d = worker
            .decide(
                &case(State::Paid),
                &ordered(json!({"centre_order_id": "C1"})),
                None,
                date("2099-06-01"),
            )
            .unwrap();
        let (_, detail) = d.step.unwrap();
        assert!(detail.pointer("/due/error").is_some(), "{detail}");
    }

    #[test]
    fn what_does_not_decode_is_refused_naming_the_field() {
        let case_id = "case_0123456789abcdef01234567".parse().unwrap();
        let event = Envelope::new(
            wangban_domain::ids::EventId::derived(&["t"]),
            EventType::ProductionReported,
            "/t",
            Default::default(),
            case_id,
            None,
            json!({"document_number": "E1"}),
        );
        assert!(Input::decode(&event).unwrap_err().contains("status"));
        let worker = worker();
        let err = worker
            .decide(
                &case(State::Paid),
                &ordered(json!({})),
                None,
                date("2026-09-25"),
            )
            .unwrap_err();
        assert!(err.contains("centre_order_id"), "{err}");
    }
}
