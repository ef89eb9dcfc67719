//! Courier dispatch: a produced document either ships by courier — booked with postage paid by the
//! recipient on delivery (到付), our case as the idempotency key, the waybill recorded — or waits at
//! the exit-entry hall of the household registration's district. Courier and hall reports finish
//! the case. A failed delivery attempt is recorded for the operators' queue (the courier tries
//! again, or an operator returns the document); a returned document goes to the hall of the
//! household registration, where the applicant collects it like any pickup.
//!
//! The policy is [`decide`], a pure function of the case and the event ([`Input`], decoded once
//! at the edge); the handler loads the case, decides and applies.

use async_trait::async_trait;
use serde_json::{Value, json};
use wangban_domain::application::DeliveryMethod;
use wangban_domain::effects::{Effect, EffectReport, Party};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_runtime::{CaseRecord, Cx, Decision, Handler, HandlerError};

/// The courier dispatch worker. It asks for the booking or the pickup notice; the courier's and
/// the hall's executors carry them out after the commit, and their answers move the case.
pub struct Dispatch;

/// A courier's status report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CourierStatus {
    PickedUp,
    InTransit,
    Delivered,
    FailedDelivery,
    Returned,
}

impl CourierStatus {
    fn parse(s: &str) -> Option<CourierStatus> {
        Some(match s {
            "picked_up" => CourierStatus::PickedUp,
            "in_transit" => CourierStatus::InTransit,
            "delivered" => CourierStatus::Delivered,
            "failed_delivery" => CourierStatus::FailedDelivery,
            "returned" => CourierStatus::Returned,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            CourierStatus::PickedUp => "picked_up",
            CourierStatus::InTransit => "in_transit",
            CourierStatus::Delivered => "delivered",
            CourierStatus::FailedDelivery => "failed_delivery",
            CourierStatus::Returned => "returned",
        }
    }
}

/// What the courier worker consumes, decoded from the event.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The document was produced.
    Produced,
    /// The document came back from the courier.
    Returned,
    /// The courier reported a status of the shipment.
    Courier {
        status: CourierStatus,
        waybill: Value,
    },
    /// A staffed hall's desk recorded the document's arrival at the counter (`by` the staff
    /// member, at `hall`).
    Arrived { hall: Value, by: Value },
    /// The hall reported the document collected (`by`: the staff member at a staffed hall).
    Collected { hall: Value, by: Value },
    /// The courier booked the shipment, or the hall took the document.
    Dispatched(EffectReport),
}

impl Input {
    /// Decodes the event; what does not decode is a permanent error naming the field.
    pub fn decode(event: &Envelope) -> Result<Input, String> {
        let d = &event.data;
        match event.kind() {
            Some(EventType::Entered(State::Produced)) => Ok(Input::Produced),
            Some(EventType::Entered(State::Returned)) => Ok(Input::Returned),
            Some(EventType::CourierReported) => {
                let status = d.get("status").and_then(Value::as_str).and_then(CourierStatus::parse).ok_or(
                    "courier status is not one of picked_up, in_transit, delivered, failed_delivery, returned",
                )?;
                let waybill = d.get("waybill").cloned().unwrap_or(Value::Null);
                Ok(Input::Courier { status, waybill })
            }
            Some(EventType::PickupReported) => {
                let hall = d.get("hall").cloned().unwrap_or(Value::Null);
                let by = d.get("by").cloned().unwrap_or(Value::Null);
                match d.get("status").and_then(Value::as_str) {
                    Some("arrived") => Ok(Input::Arrived { hall, by }),
                    Some("collected") => Ok(Input::Collected { hall, by }),
                    _ => Err("pickup status must be `arrived` or `collected`".into()),
                }
            }
            Some(EventType::EffectDone(Party::Courier | Party::Hall)) => {
                Ok(Input::Dispatched(EffectReport::from_data(d)?))
            }
            _ => Err(format!("courier does not handle {}", event.event_type)),
        }
    }
}

/// The delivery method the case's application chose.
fn method(case: &CaseRecord) -> Result<DeliveryMethod, String> {
    match case.delivery_method.as_str() {
        "courier" => Ok(DeliveryMethod::Courier),
        "pickup" => Ok(DeliveryMethod::Pickup),
        other => Err(format!(
            "stored delivery method `{}` is neither courier nor pickup",
            other.chars().take(16).collect::<String>()
        )),
    }
}

/// What the courier worker does with `input` for `case`, whose shipment was booked under
/// `booked` (the waybill recorded, if any). A courier's report about another waybill is kept for
/// the operators and moves nothing.
pub fn decide(case: &CaseRecord, input: &Input, booked: Option<&str>) -> Result<Decision, String> {
    if let (Input::Courier { status, waybill }, Some(booked)) = (input, booked)
        && waybill.as_str() != Some(booked)
    {
        return Ok(Decision::audit(
            "courier_report_unmatched",
            json!({"status": status.as_str(), "waybill": waybill, "booked": booked}),
        ));
    }
    Ok(match input {
        Input::Produced => {
            let (step, effect) = match method(case)? {
                DeliveryMethod::Courier => (Step::Ship, Effect::Shipment),
                DeliveryMethod::Pickup => (Step::AnnouncePickup, Effect::PickupNotice),
            };
            if case.state == State::Produced {
                Decision::request(effect)
            } else {
                // Already dispatched (a repeated event), or early: the lifecycle decides.
                Decision::step(step, json!({}))
            }
        }
        Input::Returned => {
            if case.state == State::Returned {
                Decision::request(Effect::PickupNotice)
            } else {
                Decision::step(Step::AnnouncePickup, json!({}))
            }
        }
        Input::Dispatched(report) => {
            let (step, purpose, detail) = match report.command {
                Effect::Shipment => {
                    let waybill = report.text("waybill")?;
                    (
                        Step::Ship,
                        "shipment",
                        json!({"waybill": waybill, "postage": "到付"}),
                    )
                }
                Effect::PickupNotice => {
                    let hall = report.text("hall")?;
                    let awaiting = report.result().and_then(|r| r.get("awaiting_arrival"));
                    if awaiting.and_then(Value::as_bool) == Some(true) {
                        // A staffed hall: ready for pickup once its desk records the arrival.
                        let detail = json!({"hall": hall});
                        let sent = Decision::audit("sent_to_hall", detail.clone());
                        return Ok(match case.state {
                            State::Produced | State::Returned => {
                                sent.recording("pickup_notice", detail)
                            }
                            _ => Decision::nothing(),
                        });
                    }
                    (Step::AnnouncePickup, "pickup_notice", json!({"hall": hall}))
                }
                _ => return Err(format!("courier asked for no effect {}", report.purpose)),
            };
            let decision = Decision::step(step, detail.clone());
            if matches!(case.state, State::Produced | State::Returned) {
                decision.recording(purpose, detail)
            } else {
                decision
            }
        }
        Input::Courier { status, waybill } => match status {
            CourierStatus::Delivered => Decision::step(Step::Deliver, json!({"waybill": waybill})),
            CourierStatus::PickedUp | CourierStatus::InTransit => Decision::audit(
                "courier_status",
                json!({"status": status.as_str(), "waybill": waybill}),
            ),
            // For the operators' queue: the courier tries again, or an operator returns it.
            CourierStatus::FailedDelivery => Decision::audit(
                "delivery_problem",
                json!({"status": status.as_str(), "waybill": waybill}),
            ),
            CourierStatus::Returned => {
                Decision::step(Step::ReturnDelivery, json!({"waybill": waybill}))
            }
        },
        Input::Arrived { hall, by } => Decision::step(
            Step::AnnouncePickup,
            json!({"hall": hall, "arrived": true, "by": by}),
        ),
        Input::Collected { hall, by } => {
            let detail = match by {
                Value::Null => json!({}),
                by => json!({"hall": hall, "by": by}),
            };
            Decision::step(Step::Collect, detail)
        }
    })
}

#[async_trait]
impl Handler for Dispatch {
    fn worker(&self) -> &'static str {
        "courier"
    }

    fn steps(&self) -> Vec<Step> {
        vec![
            Step::Ship,
            Step::Deliver,
            Step::ReturnDelivery,
            Step::AnnouncePickup,
            Step::Collect,
        ]
    }

    fn emits(&self) -> Vec<EventType> {
        vec![]
    }

    fn bindings(&self) -> Vec<String> {
        [
            EventType::Entered(State::Produced),
            EventType::Entered(State::Returned),
            EventType::CourierReported,
            EventType::PickupReported,
            EventType::EffectDone(Party::Courier),
            EventType::EffectDone(Party::Hall),
        ]
        .iter()
        .map(|t| t.routing_key())
        .collect()
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let input = Input::decode(event).map_err(HandlerError::Permanent)?;
        let mut case = cx.case().await?;
        let booked = match input {
            Input::Courier { .. } => cx.tx().effect(&case.case_id, "shipment").await?,
            _ => None,
        };
        let booked = booked.as_ref().and_then(|s| s["waybill"].as_str());
        let decision = decide(&case, &input, booked).map_err(HandlerError::Permanent)?;
        cx.apply(&mut case, decision).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wangban_domain::effects::Outcome;
    use wangban_domain::ids::{CaseId, EventId};

    fn case(state: State, method: &str) -> CaseRecord {
        CaseRecord {
            delivery_method: method.into(),
            ..wangban_runtime::case_in(state)
        }
    }

    fn event(kind: EventType, data: Value) -> Envelope {
        let case: CaseId = "case_0123456789abcdef01234567".parse().unwrap();
        Envelope::new(
            EventId::derived(&["t"]),
            kind,
            "/test",
            Default::default(),
            case,
            None,
            data,
        )
    }

    fn done(command: Effect, result: Value) -> Input {
        Input::Dispatched(EffectReport {
            purpose: command.purpose(),
            command,
            outcome: Outcome::Done { result },
        })
    }

    #[test]
    fn every_event_it_consumes_decides_as_the_lifecycle_and_the_application_say() {
        use State::*;
        let waybill = json!({"waybill": "SF1"});
        let ship = json!({"waybill": "SF1", "postage": "到付"});
        #[rustfmt::skip]
        let table: Vec<(&str, State, &str, Input, Decision)> = vec![
            ("produced, courier: book", Produced, "courier", Input::Produced, Decision::request(Effect::Shipment)),
            ("produced, pickup: tell the hall", Produced, "pickup", Input::Produced, Decision::request(Effect::PickupNotice)),
            ("produced again after shipping: the lifecycle refuses", Shipped, "courier", Input::Produced, Decision::step(Step::Ship, json!({}))),
            ("produced before paid (out of order): the lifecycle waits", Paid, "courier", Input::Produced, Decision::step(Step::Ship, json!({}))),
            ("booked: record and ship", Produced, "courier", done(Effect::Shipment, waybill.clone()),
                Decision::step(Step::Ship, ship.clone()).recording("shipment", ship.clone())),
            ("booked again (late duplicate): step only, refused", Shipped, "courier", done(Effect::Shipment, waybill.clone()),
                Decision::step(Step::Ship, ship.clone())),
            ("hall took it", Produced, "pickup", done(Effect::PickupNotice, json!({"hall": "东城区出入境"})),
                Decision::step(Step::AnnouncePickup, json!({"hall": "东城区出入境"})).recording("pickup_notice", json!({"hall": "东城区出入境"}))),
            ("delivered", Shipped, "courier", Input::Courier { status: CourierStatus::Delivered, waybill: json!("SF1") },
                Decision::step(Step::Deliver, json!({"waybill": "SF1"}))),
            ("delivered before the booking was recorded: the lifecycle waits", Produced, "courier",
                Input::Courier { status: CourierStatus::Delivered, waybill: json!("SF1") }, Decision::step(Step::Deliver, json!({"waybill": "SF1"}))),
            ("a stale in_transit after delivery: recorded only", Delivered, "courier",
                Input::Courier { status: CourierStatus::InTransit, waybill: json!("SF1") },
                Decision::audit("courier_status", json!({"status": "in_transit", "waybill": "SF1"}))),
            ("failed attempt: for the operators", Shipped, "courier", Input::Courier { status: CourierStatus::FailedDelivery, waybill: json!("SF1") },
                Decision::audit("delivery_problem", json!({"status": "failed_delivery", "waybill": "SF1"}))),
            ("returned: the document comes back", Shipped, "courier", Input::Courier { status: CourierStatus::Returned, waybill: json!("SF1") },
                Decision::step(Step::ReturnDelivery, json!({"waybill": "SF1"}))),
            ("returned twice: the lifecycle refuses the second", Returned, "courier", Input::Courier { status: CourierStatus::Returned, waybill: json!("SF1") },
                Decision::step(Step::ReturnDelivery, json!({"waybill": "SF1"}))),
            ("back: tell the hall of the hukou district", Returned, "courier", Input::Returned, Decision::request(Effect::PickupNotice)),
            ("back, already at the hall (repeated event): the lifecycle refuses", ReadyForPickup, "courier", Input::Returned,
                Decision::step(Step::AnnouncePickup, json!({}))),
            ("the hall took the returned document", Returned, "courier", done(Effect::PickupNotice, json!({"hall": "东城区出入境"})),
                Decision::step(Step::AnnouncePickup, json!({"hall": "东城区出入境"})).recording("pickup_notice", json!({"hall": "东城区出入境"}))),
            ("delivered after it came back (out of order): the lifecycle refuses", Returned, "courier",
                Input::Courier { status: CourierStatus::Delivered, waybill: json!("SF1") }, Decision::step(Step::Deliver, json!({"waybill": "SF1"}))),
            ("collected (simulated hall)", ReadyForPickup, "pickup", Input::Collected { hall: Value::Null, by: Value::Null },
                Decision::step(Step::Collect, json!({}))),
            // A staffed hall: ready only once its desk records the arrival.
            ("a staffed hall took it: sent, not yet ready", Produced, "pickup",
                done(Effect::PickupNotice, json!({"hall": "东城大厅", "awaiting_arrival": true})),
                Decision::audit("sent_to_hall", json!({"hall": "东城大厅"})).recording("pickup_notice", json!({"hall": "东城大厅"}))),
            ("a staffed hall took the returned document", Returned, "courier",
                done(Effect::PickupNotice, json!({"hall": "东城大厅", "awaiting_arrival": true})),
                Decision::audit("sent_to_hall", json!({"hall": "东城大厅"})).recording("pickup_notice", json!({"hall": "东城大厅"}))),
            ("the hall's answer after its arrival was recorded (late): nothing", ReadyForPickup, "pickup",
                done(Effect::PickupNotice, json!({"hall": "东城大厅", "awaiting_arrival": true})), Decision::nothing()),
            ("arrived at the counter: ready for pickup", Produced, "pickup",
                Input::Arrived { hall: json!("dc"), by: json!("w1") },
                Decision::step(Step::AnnouncePickup, json!({"hall": "dc", "arrived": true, "by": "w1"}))),
            ("arrived twice (a repeated event): the lifecycle refuses", ReadyForPickup, "pickup",
                Input::Arrived { hall: json!("dc"), by: json!("w1") },
                Decision::step(Step::AnnouncePickup, json!({"hall": "dc", "arrived": true, "by": "w1"}))),
            ("handed over at a staffed hall", ReadyForPickup, "pickup", Input::Collected { hall: json!("dc"), by: json!("w1") },
                Decision::step(Step::Collect, json!({"hall": "dc", "by": "w1"}))),
            ("delivered, another waybill than booked: for the operators, no step", Shipped, "courier",
                Input::Courier { status: CourierStatus::Delivered, waybill: json!("SF2") },
                Decision::audit("courier_report_unmatched", json!({"status": "delivered", "waybill": "SF2", "booked": "SF1"}))),
            ("returned, no waybill at all: no step", Shipped, "courier",
                Input::Courier { status: CourierStatus::Returned, waybill: Value::Null },
                Decision::audit("courier_report_unmatched", json!({"status": "returned", "waybill": null, "booked": "SF1"}))),
        ];
        for (what, state, method, input, expected) in table {
            // Booked as SF1 once the case has shipped.
            let booked = (!matches!(state, Produced | Paid)).then_some("SF1");
            assert_eq!(
                decide(&case(state, method), &input, booked).unwrap(),
                expected,
                "{what}"
            );
        }
        // What the lifecycle then does with the steps above (applied by the runtime).
        assert!(
            Shipped
                .apply(Step::Ship)
                .is_err_and(|r| !r.may_succeed_later())
        );
        assert!(Paid.apply(Step::Ship).is_err_and(|r| r.may_succeed_later()));
        assert!(
            Produced
                .apply(Step::Deliver)
                .is_err_and(|r| r.may_succeed_later())
        );
        assert!(
            Returned
                .apply(Step::ReturnDelivery)
                .is_err_and(|r| !r.may_succeed_later())
        );
        assert!(
            Returned
                .apply(Step::Deliver)
                .is_err_and(|r| !r.may_succeed_later())
        );
        assert_eq!(Returned.apply(Step::AnnouncePickup), Ok(ReadyForPickup));
    }

    #[test]
    fn what_does_not_decode_is_refused_naming_the_field() {
        let bad = event(EventType::CourierReported, json!({"status": "lost"}));
        assert!(Input::decode(&bad).unwrap_err().contains("courier status"));
        let bad = event(EventType::PickupReported, json!({}));
        assert!(Input::decode(&bad).unwrap_err().contains("pickup status"));
        let arrived = event(
            EventType::PickupReported,
            json!({"status": "arrived", "hall": "dc", "by": "w1"}),
        );
        assert_eq!(
            Input::decode(&arrived).unwrap(),
            Input::Arrived {
                hall: json!("dc"),
                by: json!("w1")
            }
        );
        let bad = event(
            EventType::EffectDone(Party::Courier),
            json!({"purpose": "shipment"}),
        );
        assert!(Input::decode(&bad).unwrap_err().contains("command"));
        let no_waybill = done(Effect::Shipment, json!({}));
        let err = decide(&case(State::Produced, "courier"), &no_waybill, None).unwrap_err();
        assert!(err.contains("waybill"), "{err}");
        let odd = case(State::Produced, "drone");
        assert!(
            decide(&odd, &Input::Produced, None)
                .unwrap_err()
                .contains("delivery method")
        );
    }
}
