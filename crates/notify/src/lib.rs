//! The fee notification worker (SMS). On approval it asks the payment gateway for an order, moves
//! the case to `awaiting_payment` and sends the fee SMS; payment results confirm it; its clock sends
//! the reminder and closes the payment window. Every other SMS the applicant receives goes out here
//! too, exactly once per (case, purpose): the gateway gets `case:purpose` as its out-id, and the
//! effect command's key makes a redelivery ask for nothing new. News of progress (in production,
//! shipped, ready for pickup) that arrives after the case has moved on is not sent: it is recorded
//! as `sms_skipped`, so an applicant never reads "in production" after "delivered".
//!
//! The policy is [`Notify::decide`], a pure function of the case, the event ([`Input`]) and the
//! time; the handler loads the case, decides and applies.

pub mod templates;

use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use templates::{Purpose, render};
use wangban_domain::application::DocumentKind;
use wangban_domain::effects::{Effect, EffectReport, Party};
use wangban_domain::eligibility::ReasonCode;
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_runtime::{CaseRecord, Cx, Decision, Handler, HandlerError, Runtime};

pub use wangban_domain::fees::FeeConfig;

/// The fee notification worker. It decides; the SMS gateway's and the payment gateway's executors
/// carry out what it asks for after its transaction commits.
pub struct Notify {
    fees: FeeConfig,
    /// Whether this process has scheduled the deadlines of the cases that were already waiting
    /// for payment when it started (cases of a version that scanned instead of scheduling).
    caught_up: std::sync::atomic::AtomicBool,
}

impl Notify {
    /// The worker with its fees and payment window.
    pub fn new(fees: FeeConfig) -> Notify {
        Notify {
            fees,
            caught_up: Default::default(),
        }
    }

    /// The payment clock's deadlines, from the case's entry into `awaiting_payment`.
    fn deadlines(&self) -> [wangban_runtime::Deadline; 2] {
        [
            Deadline::Reminder.after(self.fees.reminder_after),
            Deadline::Expiry.after(self.fees.payment_window),
        ]
    }
}

/// The items of a correction request, in the applicant's words.
fn correction_items(data: &Value) -> String {
    let items = data.get("detail").and_then(|d| d.get("items"));
    items
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|i| wangban_domain::review::correction_item_zh(i).unwrap_or(i))
                .collect::<Vec<_>>()
                .join("、")
        })
        .unwrap_or_default()
}

/// The command for the SMS of `purpose` (the `occurrence`-th of its purpose, from 2 on).
fn sms_effect(
    case: &CaseRecord,
    purpose: Purpose,
    params: BTreeMap<String, String>,
    occurrence: Option<i64>,
) -> Effect {
    let name = match occurrence {
        Some(n) if n > 1 => format!("{}:{n}", purpose.as_str()),
        _ => purpose.as_str().to_owned(),
    };
    Effect::Sms {
        name,
        purpose: purpose.as_str().into(),
        template: templates::template_name(purpose, kind_of(case)),
        text: render(purpose, kind_of(case), &params),
        params,
    }
}

fn kind_of(case: &CaseRecord) -> Option<DocumentKind> {
    match case.document_kind.as_deref() {
        Some("passport") => Some(DocumentKind::Passport),
        Some("hk_macao_permit") => Some(DocumentKind::HkMacaoPermit),
        Some("taiwan_permit") => Some(DocumentKind::TaiwanPermit),
        _ => None,
    }
}

/// A payment clock's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deadline {
    Reminder,
    Expiry,
}

impl Deadline {
    /// Its name in `payment.deadline` events.
    pub fn name(self) -> &'static str {
        match self {
            Deadline::Reminder => "reminder",
            Deadline::Expiry => "expiry",
        }
    }

    /// The `payment.deadline` event fired `after` the case began waiting for payment.
    fn after(self, after: Duration) -> wangban_runtime::Deadline {
        wangban_runtime::Deadline {
            kind: EventType::PaymentDeadline,
            data: json!({"deadline": self.name()}),
            key: vec!["payment".into(), self.name().into()],
            after,
        }
    }
}

/// What the fee notification worker consumes, decoded from the event.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// The case was approved: the fee is due.
    Approved,
    /// The payment gateway made the order.
    PaymentOrdered(EffectReport),
    /// The gateway reported a payment for its order `gateway_order_id`.
    PaymentReported {
        payment_id: String,
        gateway_order_id: Option<String>,
        status: String,
        amount_cny: u64,
    },
    /// The payment clock fell due.
    Deadline(Deadline),
    /// The SMS gateway's delivery receipt.
    Receipt {
        purpose: String,
        delivered: bool,
        provider_id: Value,
        error: Value,
    },
    /// A lifecycle event the applicant is told of by SMS.
    Announce(EventType, Value),
}

impl Input {
    /// Decodes the event; what does not decode is a permanent error naming the field.
    pub fn decode(event: &Envelope) -> Result<Input, String> {
        let d = &event.data;
        let text = |k: &str| d.get(k).and_then(Value::as_str);
        Ok(match event.kind() {
            Some(EventType::Entered(State::Approved)) => Input::Approved,
            Some(EventType::EffectDone(Party::Payment)) => {
                Input::PaymentOrdered(EffectReport::from_data(d)?)
            }
            Some(EventType::PaymentReported) => {
                let payment_id = text("payment_id").filter(|p| !p.is_empty());
                let amount = d.get("amount_cny").and_then(Value::as_u64);
                let (Some(payment_id), Some(amount_cny)) = (payment_id, amount) else {
                    return Err("payment report needs payment_id and amount_cny".into());
                };
                Input::PaymentReported {
                    payment_id: payment_id.to_owned(),
                    gateway_order_id: text("gateway_order_id")
                        .map(|g| g.chars().take(100).collect()),
                    status: text("status").unwrap_or("").chars().take(32).collect(),
                    amount_cny,
                }
            }
            Some(EventType::PaymentDeadline) => Input::Deadline(match text("deadline") {
                Some("reminder") => Deadline::Reminder,
                Some("expiry") => Deadline::Expiry,
                _ => return Err("payment deadline must be `reminder` or `expiry`".into()),
            }),
            Some(EventType::SmsReported) => {
                let purpose = text("purpose").filter(|p| !p.is_empty());
                let delivered = d.get("delivered").and_then(Value::as_bool);
                let (Some(purpose), Some(delivered)) = (purpose, delivered) else {
                    return Err("SMS receipt needs purpose and delivered".into());
                };
                Input::Receipt {
                    purpose: purpose.to_owned(),
                    delivered,
                    provider_id: d.get("provider_id").cloned().unwrap_or(Value::Null),
                    error: d.get("error").cloned().unwrap_or(Value::Null),
                }
            }
            Some(kind) if ANNOUNCED.contains(&kind) => Input::Announce(kind, d.clone()),
            _ => return Err(format!("notify does not handle {}", event.event_type)),
        })
    }
}

fn detail_of(data: &Value, key: &str) -> String {
    match data.get("detail").and_then(|d| d.get(key)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("、"),
        Some(v) if !v.is_null() => v.to_string(),
        _ => String::new(),
    }
}

impl Notify {
    /// What the fee notification worker does with `input` for `case`, at `now_ms`, the case's
    /// payment order being `ordered` (the gateway's order id recorded with the fee request).
    /// A payment is taken only for that order and the fee due; other money is kept for refund.
    pub fn decide(
        &self,
        case: &CaseRecord,
        input: &Input,
        now_ms: i64,
        ordered: Option<&str>,
    ) -> Result<Decision, String> {
        let amount = self.fees.fee(kind_of(case));
        Ok(match input {
            Input::Approved if case.state == State::Approved => {
                Decision::request(Effect::PaymentOrder { amount_cny: amount })
            }
            // Already asked (a repeated event), or early: the lifecycle decides.
            Input::Approved => Decision::step(Step::RequestFee, json!({})),
            Input::PaymentOrdered(report) => {
                let Effect::PaymentOrder { amount_cny } = report.command else {
                    return Err(format!("notify asked for no effect {}", report.purpose));
                };
                let gateway_order_id = report.text("gateway_order_id")?;
                let d = json!({"amount_cny": amount_cny, "gateway_order_id": gateway_order_id});
                let decision = Decision::step(Step::RequestFee, d.clone());
                if case.state != State::Approved {
                    return Ok(decision);
                }
                let days = (self.fees.payment_window.as_secs() / 86_400).max(1);
                let params = BTreeMap::from([
                    ("amount".into(), amount_cny.to_string()),
                    ("days".into(), days.to_string()),
                ]);
                let [reminder, expiry] = self.deadlines();
                decision
                    .recording("payment_order", d)
                    .requesting(sms_effect(case, Purpose::FeeDue, params, None))
                    .scheduling(reminder)
                    .scheduling(expiry)
            }
            Input::PaymentReported {
                payment_id,
                gateway_order_id,
                status,
                amount_cny,
            } => {
                if status != "succeeded" {
                    return Ok(Decision::audit(
                        "payment_not_completed",
                        json!({"payment_id": payment_id, "status": status}),
                    ));
                }
                let refund = |why: &str, kind: &'static str| {
                    let r = json!({"payment_id": payment_id, "amount_cny": amount_cny, "why": why});
                    Decision::audit(kind, r.clone())
                        .recording(&format!("refund_due:{payment_id}"), r)
                };
                if *amount_cny != u64::from(amount) {
                    refund("amount does not match the fee", "payment_refused")
                } else if let Some(ordered) = ordered
                    && gateway_order_id.as_deref() != Some(ordered)
                {
                    // Not the order we made for this case (a report forged on the bus, say):
                    // no transition; if money moved, it is kept for refund.
                    tracing::warn!(
                        "a payment report names another order than the case's; not applied"
                    );
                    refund(
                        "payment for another order than the case's",
                        "payment_unmatched",
                    )
                } else if case.state == State::PaymentExpired {
                    // Money for a lapsed application: kept for refund, never lost.
                    refund("payment after the window closed", "payment_after_expiry")
                } else {
                    Decision::step(
                        Step::ConfirmPayment,
                        json!({"payment_id": payment_id, "amount_cny": amount_cny,
                               "gateway_order_id": gateway_order_id}),
                    )
                }
            }
            Input::Deadline(deadline) => {
                if case.state != State::AwaitingPayment {
                    return Ok(Decision::nothing()); // paid or closed meanwhile: a stale timer
                }
                let unpaid_for = Duration::from_millis((now_ms - case.state_since).max(0) as u64);
                match deadline {
                    Deadline::Reminder if unpaid_for >= self.fees.reminder_after => {
                        let params = BTreeMap::from([("amount".into(), amount.to_string())]);
                        Decision::request(sms_effect(case, Purpose::PaymentReminder, params, None))
                    }
                    Deadline::Expiry if unpaid_for >= self.fees.payment_window => Decision::step(
                        Step::ExpirePayment,
                        json!({"unpaid_for_s": unpaid_for.as_secs()}),
                    )
                    .requesting(sms_effect(
                        case,
                        Purpose::PaymentExpired,
                        BTreeMap::new(),
                        None,
                    )),
                    _ => Decision::nothing(), // not due yet: an early timer
                }
            }
            Input::Receipt {
                purpose,
                delivered,
                provider_id,
                error,
            } => Decision::audit(
                if *delivered {
                    "sms_delivered"
                } else {
                    "sms_undelivered"
                },
                json!({"purpose": purpose, "provider_id": provider_id, "error": error}),
            ),
            // News of a step the case has already gone past is not sent: an applicant never
            // reads "in production" after "shipped" or "delivered". It is on the timeline.
            Input::Announce(EventType::Entered(s), _) if is_progress(*s) && case.state != *s => {
                Decision::audit(
                    "sms_skipped",
                    json!({"announced": s, "state": case.state, "why": "the case has moved on"}),
                )
            }
            Input::Announce(kind, data) => Decision::request(announcement(case, *kind, data)?),
        })
    }
}

/// A state whose SMS only tells the applicant how things are going: worth sending only while the
/// case is still there. (Decisions, closures, the correction request and the news that the
/// document came back — which explains why it waits at the hall — are always sent.)
fn is_progress(state: State) -> bool {
    matches!(
        state,
        State::InProduction | State::Shipped | State::ReadyForPickup
    )
}

/// The SMS that follows a lifecycle event.
fn announcement(case: &CaseRecord, kind: EventType, data: &Value) -> Result<Effect, String> {
    let param = |k: &str, v: String| BTreeMap::from([(k.to_owned(), v)]);
    let (purpose, params) = match kind {
        EventType::DocumentInvalidated => (Purpose::DocumentInvalidated, BTreeMap::new()),
        EventType::Entered(State::Rejected) => {
            let text: Vec<&str> = data
                .pointer("/detail/reasons")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|r| serde_json::from_value::<ReasonCode>(r.clone()).ok())
                .map(ReasonCode::explanation_zh)
                .collect();
            (Purpose::Rejected, param("reasons", text.join("；")))
        }
        EventType::Entered(State::CorrectionRequested) => {
            let mut p = param("items", correction_items(data));
            p.insert("message".into(), detail_of(data, "message"));
            let round = Some(case.review_round);
            return Ok(sms_effect(case, Purpose::CorrectionRequested, p, round));
        }
        EventType::Entered(State::CorrectionLapsed) => (
            Purpose::CorrectionLapsed,
            param("why", detail_of(data, "why")),
        ),
        EventType::Entered(State::ReviewRejected) => (
            Purpose::ReviewRejected,
            param("reason", detail_of(data, "reason")),
        ),
        EventType::Entered(State::InProduction) => (Purpose::InProduction, BTreeMap::new()),
        EventType::Entered(State::Shipped) => (
            Purpose::Shipped,
            param("waybill", detail_of(data, "waybill")),
        ),
        EventType::Entered(State::Returned) => (
            Purpose::Returned,
            param("waybill", detail_of(data, "waybill")),
        ),
        EventType::Entered(State::ReadyForPickup) => (
            Purpose::ReadyForPickup,
            param("hall", detail_of(data, "hall")),
        ),
        EventType::Entered(State::Delivered) => (Purpose::Delivered, BTreeMap::new()),
        other => return Err(format!("notify has no SMS for {}", other.type_name())),
    };
    Ok(sms_effect(case, purpose, params, None))
}

const ANNOUNCED: [EventType; 10] = [
    EventType::DocumentInvalidated,
    EventType::Entered(State::Rejected),
    EventType::Entered(State::CorrectionRequested),
    EventType::Entered(State::CorrectionLapsed),
    EventType::Entered(State::ReviewRejected),
    EventType::Entered(State::InProduction),
    EventType::Entered(State::Shipped),
    EventType::Entered(State::Returned),
    EventType::Entered(State::ReadyForPickup),
    EventType::Entered(State::Delivered),
];

#[async_trait]
impl Handler for Notify {
    fn worker(&self) -> &'static str {
        "notify"
    }

    fn steps(&self) -> Vec<Step> {
        vec![Step::RequestFee, Step::ExpirePayment, Step::ConfirmPayment]
    }

    fn emits(&self) -> Vec<EventType> {
        vec![EventType::PaymentDeadline]
    }

    fn bindings(&self) -> Vec<String> {
        let mut keys: Vec<String> = ANNOUNCED.iter().map(|t| t.routing_key()).collect();
        keys.extend(
            [
                EventType::Entered(State::Approved),
                EventType::PaymentReported,
                EventType::PaymentDeadline,
                EventType::SmsReported,
                EventType::EffectDone(Party::Payment),
            ]
            .iter()
            .map(|t| t.routing_key()),
        );
        keys
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let input = Input::decode(event).map_err(HandlerError::Permanent)?;
        let mut case = cx.case().await?;
        let order = match input {
            Input::PaymentReported { .. } => cx.tx().effect(&case.case_id, "payment_order").await?,
            _ => None,
        };
        let ordered = order.as_ref().and_then(|o| o["gateway_order_id"].as_str());
        let now = cx.tx().clock().now_ms();
        let decision = self
            .decide(&case, &input, now, ordered)
            .map_err(HandlerError::Permanent)?;
        cx.apply(&mut case, decision).await?;
        Ok(())
    }

    /// The payment clock's deadlines are scheduled with the fee request; once per process, this
    /// schedules them for the cases that were already waiting when it started (a deadline already
    /// waiting stays as it is; one that had fired fires again and changes nothing).
    async fn tick(&self, rt: &Runtime) -> Result<(), HandlerError> {
        if self.caught_up.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        for (case, since, _) in rt
            .store
            .waiting_unscheduled(State::AwaitingPayment.as_str())
            .await?
        {
            for deadline in self.deadlines() {
                let waiting = State::AwaitingPayment;
                rt.schedule(self.worker(), &case, waiting, since, deadline)
                    .await?;
            }
        }
        self.caught_up
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(state: State, kind: &str, state_since: i64) -> CaseRecord {
        CaseRecord {
            document_kind: Some(kind.into()),
            review_round: 2,
            state_since,
            ..wangban_runtime::case_in(state)
        }
    }

    fn paid(amount: u64) -> Input {
        paid_for("G1", amount)
    }

    fn paid_for(order: &str, amount: u64) -> Input {
        Input::PaymentReported {
            payment_id: "PAY1".into(),
            gateway_order_id: Some(order.into()),
            status: "succeeded".into(),
            amount_cny: amount,
        }
    }

    fn sms(case: &CaseRecord, purpose: Purpose, params: &[(&str, &str)]) -> Effect {
        let p = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sms_effect(case, purpose, p, None)
    }

    #[test]
    fn every_event_it_consumes_decides_by_the_fee_and_the_payment_window() {
        use State::*;
        let n = Notify::new(FeeConfig::default());
        let day = 86_400_000;
        let ordered = |result: Value| {
            let command = Effect::PaymentOrder { amount_cny: 120 };
            Input::PaymentOrdered(EffectReport {
                purpose: command.purpose(),
                command,
                outcome: wangban_domain::effects::Outcome::Done { result },
            })
        };
        let order = json!({"amount_cny": 120, "gateway_order_id": "G1"});
        let approved = case(Approved, "passport", 0);
        let awaiting = case(AwaitingPayment, "passport", 0);
        let refund = |why: &str| json!({"payment_id": "PAY1", "amount_cny": 60, "why": why});
        // The payment clock, from the entry into awaiting_payment: reminder after 3 days, lapse after 7.
        let deadline = |name: &str, days: u64| wangban_runtime::Deadline {
            kind: EventType::PaymentDeadline,
            data: json!({"deadline": name}),
            key: vec!["payment".into(), name.into()],
            after: Duration::from_secs(days * 86_400),
        };
        #[rustfmt::skip]
        let table: Vec<(&str, CaseRecord, Input, i64, Decision)> = vec![
            ("approved: a payment order of the passport fee", approved.clone(), Input::Approved, 0,
                Decision::request(Effect::PaymentOrder { amount_cny: 120 })),
            ("a permit's fee", case(Approved, "hk_macao_permit", 0), Input::Approved, 0,
                Decision::request(Effect::PaymentOrder { amount_cny: 60 })),
            ("approved again once awaiting payment: the lifecycle refuses", awaiting.clone(), Input::Approved, 0,
                Decision::step(Step::RequestFee, json!({}))),
            ("ordered: record, await payment, fee SMS", approved.clone(), ordered(json!({"gateway_order_id": "G1"})), 0,
                Decision::step(Step::RequestFee, order.clone()).recording("payment_order", order.clone())
                    .requesting(sms(&approved, Purpose::FeeDue, &[("amount", "120"), ("days", "7")]))
                    .scheduling(deadline("reminder", 3)).scheduling(deadline("expiry", 7))),
            ("ordered again (late duplicate): step only, refused", awaiting.clone(), ordered(json!({"gateway_order_id": "G1"})), 0,
                Decision::step(Step::RequestFee, order.clone())),
            ("paid", awaiting.clone(), paid(120), 0,
                Decision::step(Step::ConfirmPayment, json!({"payment_id": "PAY1", "amount_cny": 120, "gateway_order_id": "G1"}))),
            ("paid before the order was recorded: the lifecycle waits", approved.clone(), paid(120), 0,
                Decision::step(Step::ConfirmPayment, json!({"payment_id": "PAY1", "amount_cny": 120, "gateway_order_id": "G1"}))),
            ("paid the wrong amount: kept for refund", awaiting.clone(), paid(60), 0,
                Decision::audit("payment_refused", refund("amount does not match the fee"))
                    .recording("refund_due:PAY1", refund("amount does not match the fee"))),
            ("paid after the window closed: kept for refund", case(PaymentExpired, "passport", 0), paid(120), 0, {
                let r = json!({"payment_id": "PAY1", "amount_cny": 120, "why": "payment after the window closed"});
                Decision::audit("payment_after_expiry", r.clone()).recording("refund_due:PAY1", r)
            }),
            ("paid for another order (forged on the bus): kept for refund, no step", awaiting.clone(), paid_for("G9", 120), 0, {
                let r = json!({"payment_id": "PAY1", "amount_cny": 120, "why": "payment for another order than the case's"});
                Decision::audit("payment_unmatched", r.clone()).recording("refund_due:PAY1", r)
            }),
            ("paid naming no order at all: kept for refund, no step", awaiting.clone(),
                Input::PaymentReported { payment_id: "PAY1".into(), gateway_order_id: None, status: "succeeded".into(), amount_cny: 120 }, 0, {
                let r = json!({"payment_id": "PAY1", "amount_cny": 120, "why": "payment for another order than the case's"});
                Decision::audit("payment_unmatched", r.clone()).recording("refund_due:PAY1", r)
            }),
            ("a failed payment: recorded only", awaiting.clone(),
                Input::PaymentReported { payment_id: "PAY1".into(), gateway_order_id: Some("G1".into()), status: "failed".into(), amount_cny: 120 }, 0,
                Decision::audit("payment_not_completed", json!({"payment_id": "PAY1", "status": "failed"}))),
            ("reminder not due yet (early timer)", awaiting.clone(), Input::Deadline(Deadline::Reminder), 2 * day, Decision::nothing()),
            ("reminder due", awaiting.clone(), Input::Deadline(Deadline::Reminder), 3 * day,
                Decision::request(sms(&awaiting, Purpose::PaymentReminder, &[("amount", "120")]))),
            ("expiry not due yet", awaiting.clone(), Input::Deadline(Deadline::Expiry), 7 * day - 1, Decision::nothing()),
            ("expiry due: lapse and tell", awaiting.clone(), Input::Deadline(Deadline::Expiry), 7 * day,
                Decision::step(Step::ExpirePayment, json!({"unpaid_for_s": 7 * 86_400}))
                    .requesting(sms(&awaiting, Purpose::PaymentExpired, &[]))),
            ("expiry after payment (stale timer)", case(Paid, "passport", 0), Input::Deadline(Deadline::Expiry), 8 * day, Decision::nothing()),
            ("a receipt", awaiting.clone(), Input::Receipt { purpose: "fee_due".into(), delivered: false,
                provider_id: json!("S1"), error: json!("UNDELIV") }, 0,
                Decision::audit("sms_undelivered", json!({"purpose": "fee_due", "provider_id": "S1", "error": "UNDELIV"}))),
            ("in production, but already shipped: skipped, on the timeline", case(Shipped, "passport", 0),
                Input::Announce(EventType::Entered(InProduction), json!({})), 0,
                Decision::audit("sms_skipped", json!({"announced": "in_production", "state": "shipped", "why": "the case has moved on"}))),
            ("shipped, but already delivered: skipped", case(Delivered, "passport", 0),
                Input::Announce(EventType::Entered(Shipped), json!({"detail": {"waybill": "SF1"}})), 0,
                Decision::audit("sms_skipped", json!({"announced": "shipped", "state": "delivered", "why": "the case has moved on"}))),
            ("delivered is always told", case(Delivered, "passport", 0),
                Input::Announce(EventType::Entered(Delivered), json!({})), 0,
                Decision::request(sms(&case(Delivered, "passport", 0), Purpose::Delivered, &[]))),
            ("a correction request is told even once resubmitted", case(UnderReview, "passport", 0),
                Input::Announce(EventType::Entered(CorrectionRequested), json!({"detail": {"items": ["photo"], "message": ""}})), 0,
                Decision::request(sms_effect(&case(UnderReview, "passport", 0), Purpose::CorrectionRequested,
                    BTreeMap::from([("items".into(), "证件照片".into()), ("message".into(), String::new())]), Some(2)))),
            ("shipped: the SMS names the waybill", case(Shipped, "passport", 0),
                Input::Announce(EventType::Entered(Shipped), json!({"detail": {"waybill": "SF1"}})), 0,
                Decision::request(sms(&case(Shipped, "passport", 0), Purpose::Shipped, &[("waybill", "SF1")]))),
            ("returned: told even once at the hall (it explains why)", case(ReadyForPickup, "passport", 0),
                Input::Announce(EventType::Entered(Returned), json!({"detail": {"waybill": "SF1"}})), 0,
                Decision::request(sms(&case(ReadyForPickup, "passport", 0), Purpose::Returned, &[("waybill", "SF1")]))),
        ];
        for (what, case, input, now, expected) in table {
            // The order G1 is recorded with the fee request.
            let ordered = (case.state != State::Approved).then_some("G1");
            assert_eq!(
                n.decide(&case, &input, now, ordered).unwrap(),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn a_second_correction_round_has_an_sms_of_its_own() {
        let n = Notify::new(FeeConfig::default());
        let c = case(State::CorrectionRequested, "passport", 0);
        let data = json!({"detail": {"items": ["photo"], "message": "白底"}});
        let d = n
            .decide(
                &c,
                &Input::Announce(EventType::Entered(State::CorrectionRequested), data),
                0,
                None,
            )
            .unwrap();
        assert_eq!(d.request.len(), 1);
        assert_eq!(d.request[0].purpose(), "sms:correction_requested:2");
        let Effect::Sms { text, .. } = &d.request[0] else {
            panic!("an SMS")
        };
        assert!(text.contains("证件照片") && text.contains("白底"), "{text}");
    }

    #[test]
    fn what_does_not_decode_is_refused_naming_the_field() {
        let ev = |kind, data| {
            Envelope::new(
                wangban_domain::ids::EventId::derived(&["t"]),
                kind,
                "/t",
                Default::default(),
                "case_0123456789abcdef01234567".parse().unwrap(),
                None,
                data,
            )
        };
        let no_amount = ev(EventType::PaymentReported, json!({"payment_id": "P"}));
        assert!(
            Input::decode(&no_amount)
                .unwrap_err()
                .contains("amount_cny")
        );
        let odd = ev(EventType::PaymentDeadline, json!({"deadline": "tomorrow"}));
        assert!(Input::decode(&odd).unwrap_err().contains("reminder"));
        let receipt = ev(EventType::SmsReported, json!({"purpose": "fee_due"}));
        assert!(Input::decode(&receipt).unwrap_err().contains("delivered"));
    }

    #[test]
    fn a_correction_sms_names_the_items_in_the_applicants_words() {
        let case: wangban_domain::ids::CaseId = "case_0123456789abcdef01234567".parse().unwrap();
        let event = Envelope::new(
            wangban_domain::ids::EventId::derived(&["t"]),
            EventType::Entered(State::CorrectionRequested),
            "/test",
            Default::default(),
            case,
            None,
            json!({"detail": {"items": ["photo", "id_card_back"], "message": "背景请用白色"}}),
        );
        let items = correction_items(&event.data);
        assert_eq!(items, "证件照片、身份证国徽面照片");
        let params = BTreeMap::from([
            ("items".to_string(), items),
            ("message".to_string(), "背景请用白色".to_string()),
        ]);
        let text = render(
            Purpose::CorrectionRequested,
            Some(DocumentKind::Passport),
            &params,
        );
        assert!(
            text.contains("需补正：证件照片、身份证国徽面照片。背景请用白色"),
            "{text}"
        );
    }

    #[test]
    fn fees_follow_the_document_kind() {
        let f = FeeConfig::default();
        assert_eq!(f.fee(Some(DocumentKind::Passport)), 120);
        assert_eq!(f.fee(Some(DocumentKind::HkMacaoPermit)), 60);
        assert_eq!(f.fee(Some(DocumentKind::TaiwanPermit)), 60);
    }
}
