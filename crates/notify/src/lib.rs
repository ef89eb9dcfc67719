//! The fee notification worker (SMS). On approval it asks the payment gateway for an order, moves
//! the case to `awaiting_payment` and sends the fee SMS; payment results confirm it; its clock sends
//! the reminder and closes the payment window. Every other SMS the applicant receives goes out here
//! too, exactly once per (case, purpose): the gateway gets `case:purpose` as its out-id, and the
//! effect row makes a redelivery skip the send.

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
use wangban_domain::ids::EventId;
use wangban_domain::lifecycle::{State, Step};
use wangban_runtime::{Cx, Handler, HandlerError, Runtime, StepOutcome, ingress};
use wangban_store::CaseRecord;

/// Fees and the payment window (domain.md §6).
#[derive(Clone, Debug)]
pub struct FeeConfig {
    pub passport_cny: u32,
    pub hk_macao_permit_cny: u32,
    pub taiwan_permit_cny: u32,
    /// After this long unpaid, a reminder.
    pub reminder_after: Duration,
    /// After this long unpaid, the application lapses.
    pub payment_window: Duration,
}

impl Default for FeeConfig {
    fn default() -> Self {
        FeeConfig {
            passport_cny: 120,
            hk_macao_permit_cny: 60,
            taiwan_permit_cny: 60,
            reminder_after: Duration::from_secs(3 * 86_400),
            payment_window: Duration::from_secs(7 * 86_400),
        }
    }
}

impl FeeConfig {
    /// The fee for a document kind.
    pub fn fee(&self, kind: Option<DocumentKind>) -> u32 {
        match kind {
            Some(DocumentKind::HkMacaoPermit) => self.hk_macao_permit_cny,
            Some(DocumentKind::TaiwanPermit) => self.taiwan_permit_cny,
            _ => self.passport_cny,
        }
    }
}

/// The fee notification worker. It decides; the SMS gateway's and the payment gateway's executors
/// carry out what it asks for after its transaction commits.
pub struct Notify {
    fees: FeeConfig,
    /// When this process last published each due deadline: a deadline still waiting in the queue
    /// is not published again on every tick (a backlog would fill the queue with copies).
    clock: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

/// How long before a due deadline that is still unhandled is published again (its first copy may
/// have been lost with a crashed process before it reached the broker).
const REPUBLISH_AFTER: Duration = Duration::from_secs(60);

impl Notify {
    /// The worker with its fees and payment window.
    pub fn new(fees: FeeConfig) -> Notify {
        Notify {
            fees,
            clock: Default::default(),
        }
    }

    /// Whether the deadline `key` should be published now (not published by this process within
    /// [`REPUBLISH_AFTER`]).
    fn due_to_publish(&self, key: &str) -> bool {
        let mut clock = self.clock.lock().expect("clock lock");
        let now = std::time::Instant::now();
        clock.retain(|_, at| now.duration_since(*at) < REPUBLISH_AFTER);
        !clock.contains_key(key)
    }

    /// Notes that the deadline `key` was published (confirmed by the broker).
    fn published(&self, key: String) {
        self.clock
            .lock()
            .expect("clock lock")
            .insert(key, std::time::Instant::now());
    }
}

fn detail(event: &Envelope, key: &str) -> String {
    match event.data.get("detail").and_then(|d| d.get(key)) {
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

/// The items of a correction request, in the applicant's words.
fn correction_items(event: &Envelope) -> String {
    let items = event.data.get("detail").and_then(|d| d.get("items"));
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

impl Notify {
    /// Asks for the SMS of `purpose`, once. The gateway's executor sends it after the commit and
    /// records the answer: `sms_sent`, or `sms_failed` when the gateway refuses the number.
    async fn sms(
        &self,
        cx: &mut Cx<'_>,
        case: &CaseRecord,
        purpose: Purpose,
        params: BTreeMap<String, String>,
    ) -> Result<(), HandlerError> {
        self.sms_once(cx, case, purpose, params, None).await
    }

    /// [`Notify::sms`] for a purpose that can recur (a correction request per review round):
    /// `occurrence` 2 and later are SMS of their own, still once each.
    async fn sms_once(
        &self,
        cx: &mut Cx<'_>,
        case: &CaseRecord,
        purpose: Purpose,
        params: BTreeMap<String, String>,
        occurrence: Option<i64>,
    ) -> Result<(), HandlerError> {
        let effect = sms_effect(case, purpose, params, occurrence);
        cx.request(case, &effect).await?;
        Ok(())
    }

    /// The gateway's delivery receipt: recorded on the case's timeline (a failed delivery is for
    /// an operator to see; the gateway has already given up on it).
    async fn receipt(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let d = &event.data;
        let purpose = d.get("purpose").and_then(Value::as_str).unwrap_or("");
        let delivered = d.get("delivered").and_then(Value::as_bool);
        if purpose.is_empty() || delivered.is_none() {
            return Err(HandlerError::Permanent(
                "SMS receipt needs purpose and delivered".into(),
            ));
        }
        let case = cx.case().await?;
        let kind = if delivered == Some(true) {
            "sms_delivered"
        } else {
            "sms_undelivered"
        };
        let detail = json!({"purpose": purpose, "provider_id": d.get("provider_id"), "error": d.get("error")});
        cx.audit(&case, kind, detail).await?;
        Ok(())
    }

    /// An approved case: ask the gateway for a payment order of the fee.
    async fn approved(&self, cx: &mut Cx<'_>) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        if case.state != State::Approved {
            cx.step(&mut case, Step::RequestFee, json!({})).await?;
            return Ok(());
        }
        let amount_cny = self.fees.fee(kind_of(&case));
        cx.request(&case, &Effect::PaymentOrder { amount_cny })
            .await?;
        Ok(())
    }

    /// The gateway made the order: the case awaits payment, and the fee SMS goes out.
    async fn payment_ordered(
        &self,
        cx: &mut Cx<'_>,
        report: &EffectReport,
    ) -> Result<(), HandlerError> {
        let Effect::PaymentOrder { amount_cny } = report.command else {
            return Err(HandlerError::Permanent(format!(
                "notify asked for no effect {}",
                report.purpose
            )));
        };
        let gateway_order_id = report
            .text("gateway_order_id")
            .map_err(HandlerError::Permanent)?;
        let mut case = cx.case().await?;
        let d = json!({"amount_cny": amount_cny, "gateway_order_id": gateway_order_id});
        if case.state == State::Approved {
            cx.tx()
                .record_effect(&case.case_id, "payment_order", &d)
                .await?;
        }
        if cx.step(&mut case, Step::RequestFee, d).await?
            != StepOutcome::Applied(State::AwaitingPayment)
        {
            return Ok(());
        }
        let days = (self.fees.payment_window.as_secs() / 86_400).max(1);
        let params = BTreeMap::from([
            ("amount".into(), amount_cny.to_string()),
            ("days".into(), days.to_string()),
        ]);
        self.sms(cx, &case, Purpose::FeeDue, params).await
    }

    async fn payment_reported(
        &self,
        cx: &mut Cx<'_>,
        event: &Envelope,
    ) -> Result<(), HandlerError> {
        let d = &event.data;
        let payment_id = d
            .get("payment_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let status = d.get("status").and_then(Value::as_str).unwrap_or("");
        let amount = d.get("amount_cny").and_then(Value::as_u64);
        if payment_id.is_empty() || amount.is_none() {
            return Err(HandlerError::Permanent(
                "payment report needs payment_id and amount_cny".into(),
            ));
        }
        let mut case = cx.case().await?;
        if status != "succeeded" {
            cx.audit(
                &case,
                "payment_not_completed",
                json!({"payment_id": payment_id, "status": status}),
            )
            .await?;
            return Ok(());
        }
        let due = u64::from(self.fees.fee(kind_of(&case)));
        let refund =
            |why: &str| json!({"payment_id": payment_id, "amount_cny": amount, "why": why});
        if amount != Some(due) {
            let r = refund("amount does not match the fee");
            cx.tx()
                .record_effect(&case.case_id, &format!("refund_due:{payment_id}"), &r)
                .await?;
            cx.audit(&case, "payment_refused", r).await?;
            return Ok(());
        }
        if case.state == State::PaymentExpired {
            // Money for a lapsed application: kept for refund, never lost.
            let r = refund("payment after the window closed");
            cx.tx()
                .record_effect(&case.case_id, &format!("refund_due:{payment_id}"), &r)
                .await?;
            cx.audit(&case, "payment_after_expiry", r).await?;
            return Ok(());
        }
        cx.step(
            &mut case,
            Step::ConfirmPayment,
            json!({"payment_id": payment_id, "amount_cny": amount}),
        )
        .await?;
        Ok(())
    }

    async fn deadline(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        if case.state != State::AwaitingPayment {
            return Ok(());
        }
        let unpaid_for =
            Duration::from_millis((wangban_store::now_ms() - case.state_since).max(0) as u64);
        let amount = self.fees.fee(kind_of(&case));
        match event.data.get("deadline").and_then(Value::as_str) {
            Some("reminder") if unpaid_for >= self.fees.reminder_after => {
                let params = BTreeMap::from([("amount".into(), amount.to_string())]);
                self.sms(cx, &case, Purpose::PaymentReminder, params).await
            }
            Some("expiry") if unpaid_for >= self.fees.payment_window => {
                cx.step(
                    &mut case,
                    Step::ExpirePayment,
                    json!({"unpaid_for_s": unpaid_for.as_secs()}),
                )
                .await?;
                self.sms(cx, &case, Purpose::PaymentExpired, BTreeMap::new())
                    .await
            }
            Some("reminder" | "expiry") => Ok(()), // not due (yet): a stale or early timer
            _ => Err(HandlerError::Permanent(
                "payment deadline must be `reminder` or `expiry`".into(),
            )),
        }
    }

    /// The SMS that follow a lifecycle event.
    async fn announce(
        &self,
        cx: &mut Cx<'_>,
        event: &Envelope,
        kind: EventType,
    ) -> Result<(), HandlerError> {
        let case = cx.case().await?;
        let param = |k: &str, v: String| BTreeMap::from([(k.to_owned(), v)]);
        let (purpose, params) = match kind {
            EventType::DocumentInvalidated => (Purpose::DocumentInvalidated, BTreeMap::new()),
            EventType::Entered(State::Rejected) => {
                let reasons: Vec<&str> = event
                    .data
                    .get("detail")
                    .and_then(|d| d.get("reasons"))
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let text: Vec<&str> = reasons
                    .iter()
                    .filter_map(|r| serde_json::from_value::<ReasonCode>(json!(r)).ok())
                    .map(ReasonCode::explanation_zh)
                    .collect();
                (Purpose::Rejected, param("reasons", text.join("；")))
            }
            EventType::Entered(State::CorrectionRequested) => {
                let mut p = param("items", correction_items(event));
                p.insert("message".into(), detail(event, "message"));
                let round = Some(case.review_round);
                return self
                    .sms_once(cx, &case, Purpose::CorrectionRequested, p, round)
                    .await;
            }
            EventType::Entered(State::CorrectionLapsed) => (
                Purpose::CorrectionLapsed,
                param("why", detail(event, "why")),
            ),
            EventType::Entered(State::ReviewRejected) => (
                Purpose::ReviewRejected,
                param("reason", detail(event, "reason")),
            ),
            EventType::Entered(State::InProduction) => (Purpose::InProduction, BTreeMap::new()),
            EventType::Entered(State::Shipped) => {
                (Purpose::Shipped, param("waybill", detail(event, "waybill")))
            }
            EventType::Entered(State::ReadyForPickup) => (
                Purpose::ReadyForPickup,
                param("hall", detail(event, "hall")),
            ),
            EventType::Entered(State::Delivered) => (Purpose::Delivered, BTreeMap::new()),
            other => {
                return Err(HandlerError::Permanent(format!(
                    "notify has no SMS for {}",
                    other.type_name()
                )));
            }
        };
        self.sms(cx, &case, purpose, params).await
    }
}

const ANNOUNCED: [EventType; 9] = [
    EventType::DocumentInvalidated,
    EventType::Entered(State::Rejected),
    EventType::Entered(State::CorrectionRequested),
    EventType::Entered(State::CorrectionLapsed),
    EventType::Entered(State::ReviewRejected),
    EventType::Entered(State::InProduction),
    EventType::Entered(State::Shipped),
    EventType::Entered(State::ReadyForPickup),
    EventType::Entered(State::Delivered),
];

#[async_trait]
impl Handler for Notify {
    fn worker(&self) -> &'static str {
        "notify"
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
        match event.kind() {
            Some(EventType::Entered(State::Approved)) => self.approved(cx).await,
            Some(EventType::PaymentReported) => self.payment_reported(cx, event).await,
            Some(EventType::PaymentDeadline) => self.deadline(cx, event).await,
            Some(EventType::SmsReported) => self.receipt(cx, event).await,
            Some(EventType::EffectDone(Party::Payment)) => {
                let report = Cx::report(event)?;
                self.payment_ordered(cx, &report).await
            }
            Some(kind) if ANNOUNCED.contains(&kind) => self.announce(cx, event, kind).await,
            _ => Err(HandlerError::Permanent(format!(
                "notify does not handle {}",
                event.event_type
            ))),
        }
    }

    /// The payment clock: publishes a `payment.deadline` for each case whose reminder or window
    /// is due. Its event id is derived from (case, deadline), so publishing it again on every tick
    /// until the case moves on has no second effect.
    async fn tick(&self, rt: &Runtime) -> Result<(), HandlerError> {
        let now = wangban_store::now_ms();
        let due = [
            ("reminder", self.fees.reminder_after, "sms:payment_reminder"),
            ("expiry", self.fees.payment_window, "payment_expiry"),
        ];
        for (deadline, after, unless) in due {
            let since = now - after.as_millis() as i64;
            for case in rt.store.awaiting_payment_since(since, unless, 500).await? {
                let key = format!("{case}:{deadline}");
                if !self.due_to_publish(&key) {
                    continue;
                }
                let id = EventId::derived(&[case.as_str(), "payment", deadline]);
                let event = ingress::event(
                    EventType::PaymentDeadline,
                    "/wangban/notify/clock",
                    &case,
                    Some(id),
                    json!({"deadline": deadline}),
                );
                rt.publish_ingress(&event)
                    .await
                    .map_err(HandlerError::Transient)?;
                // Only a confirmed publish counts: after a failed one the next tick tries again.
                self.published(key);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_deadline_is_published_once_per_period() {
        let n = Notify::new(FeeConfig::default());
        assert!(n.due_to_publish("case_a:expiry"));
        assert!(
            n.due_to_publish("case_a:expiry"),
            "not published yet (the broker was away, say)"
        );
        n.published("case_a:expiry".into());
        assert!(
            !n.due_to_publish("case_a:expiry"),
            "a queued deadline is not published again"
        );
        assert!(n.due_to_publish("case_a:reminder"));
        assert!(n.due_to_publish("case_b:expiry"));
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
        let items = correction_items(&event);
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
