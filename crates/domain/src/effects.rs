//! Effects on the outside world, as commands: what a worker decided to ask of a party.
//!
//! A worker never calls a party. It decides, and the decision commits — the case's step, its
//! audit record, its outgoing events and these commands — in one transaction. An executor per
//! [`Party`] then carries each command out after the commit, with no database connection or case
//! lock held during the call, and reports the party's answer back as an event
//! ([`EffectReport`] in `effect.<party>.done`) or, for an SMS, records it directly.
//!
//! A command is keyed `(case, purpose)`, the same key the party receives as its idempotency key
//! (`<case>:<purpose>`), so it happens once however often it is requested or retried. Commands
//! hold no personal data: the executor reads the phone number or the address from the case when
//! it makes the call.

use crate::events::EventType;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A party that carries out effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Sms,
    Payment,
    Production,
    Courier,
    Hall,
    Desk,
}

impl Party {
    /// The worker whose decisions ask this party for its effects (and whose process runs the
    /// party's executor).
    pub fn requested_by(&self) -> &'static str {
        match self {
            Party::Sms | Party::Payment => "notify",
            Party::Production => "production",
            Party::Courier | Party::Hall => "courier",
            Party::Desk => "review",
        }
    }

    /// The events its executor's answers come back as, published by the requesting worker's
    /// process: `effect.<party>.done`, and for an SMS the recorded `sms.sent` / `sms.failed`.
    pub fn answers(&self) -> Vec<EventType> {
        match self {
            Party::Sms => vec![EventType::SmsSent, EventType::SmsFailed],
            p => vec![EventType::EffectDone(*p)],
        }
    }

    /// The event the party's own later report comes as (its signed callback, a desk's
    /// decision, the hall's counter): published by the HTTP surface, never by a worker.
    pub fn reports(&self) -> EventType {
        match self {
            Party::Sms => EventType::SmsReported,
            Party::Payment => EventType::PaymentReported,
            Party::Production => EventType::ProductionReported,
            Party::Courier => EventType::CourierReported,
            Party::Hall => EventType::PickupReported,
            Party::Desk => EventType::ReviewDecided,
        }
    }

    pub const ALL: [Party; 6] = [
        Party::Sms,
        Party::Payment,
        Party::Production,
        Party::Courier,
        Party::Hall,
        Party::Desk,
    ];

    /// The party's name: in routing keys, metrics and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Sms => "sms",
            Party::Payment => "payment",
            Party::Production => "production",
            Party::Courier => "courier",
            Party::Hall => "hall",
            Party::Desk => "desk",
        }
    }

    /// The party of a name.
    pub fn parse(name: &str) -> Option<Party> {
        Party::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A command for a party.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// An SMS to the applicant. `name` is the purpose, with `:<n>` for the n-th occurrence of a
    /// purpose that recurs (a correction request per round); `text` is rendered already.
    Sms {
        name: String,
        purpose: String,
        template: String,
        params: BTreeMap<String, String>,
        text: String,
    },
    /// A payment order for the document fee.
    PaymentOrder { amount_cny: u32 },
    /// A production order for the card-production centre.
    ProductionOrder { document_kind: String },
    /// A courier booking, postage paid on delivery (到付), to the application's address.
    Shipment,
    /// A document to collect at the hall of the hukou district.
    PickupNotice,
    /// A review round for a desk outside wangban.
    ReviewAssignment {
        round: i64,
        preferred_reviewer: Option<String>,
    },
}

impl Effect {
    /// The party that carries it out.
    pub fn party(&self) -> Party {
        match self {
            Effect::Sms { .. } => Party::Sms,
            Effect::PaymentOrder { .. } => Party::Payment,
            Effect::ProductionOrder { .. } => Party::Production,
            Effect::Shipment => Party::Courier,
            Effect::PickupNotice => Party::Hall,
            Effect::ReviewAssignment { .. } => Party::Desk,
        }
    }

    /// The effect's key within its case (`sms:fee_due`, `payment_order`, `review_assignment:2`):
    /// the `effects` row it becomes and, after `<case>:`, the party's idempotency key.
    pub fn purpose(&self) -> String {
        match self {
            Effect::Sms { name, .. } => format!("sms:{name}"),
            Effect::PaymentOrder { .. } => "payment_order".into(),
            Effect::ProductionOrder { .. } => "production_order".into(),
            Effect::Shipment => "shipment".into(),
            Effect::PickupNotice => "pickup_notice".into(),
            Effect::ReviewAssignment { round, .. } => format!("review_assignment:{round}"),
        }
    }

    /// The idempotency key the party receives for this effect of `case`. The keys predate the
    /// effect purposes and are kept as the parties know them.
    pub fn idempotency_key(&self, case: &str) -> String {
        match self {
            Effect::Sms { name, .. } => format!("{case}:{name}"),
            Effect::PaymentOrder { .. } => format!("{case}:fee"),
            Effect::ProductionOrder { .. } => format!("{case}:production"),
            Effect::Shipment => format!("{case}:shipment"),
            Effect::PickupNotice => format!("{case}:pickup"),
            Effect::ReviewAssignment { round, .. } => format!("{case}:review:{round}"),
        }
    }

    /// Whether the answer needs a decision of the worker that asked (a step to take): then it
    /// comes back as an `effect.<party>.done` event. An SMS needs none: its answer is recorded
    /// as it arrives.
    pub fn needs_decision(&self) -> bool {
        !matches!(self, Effect::Sms { .. })
    }

    /// How the answer to an effect that needs no decision is recorded on the case: the audit
    /// record's kind, its detail (also the `effects` row and the event's data), and the event.
    /// `None` for an effect whose answer goes back to its worker.
    pub fn recorded_answer(&self, outcome: &Outcome) -> Option<(&'static str, Value, EventType)> {
        let Effect::Sms { purpose, .. } = self else {
            return None;
        };
        Some(match outcome {
            Outcome::Done { result } => (
                "sms_sent",
                json!({"purpose": purpose, "provider_id": result.get("provider_id")}),
                EventType::SmsSent,
            ),
            Outcome::Refused { reason } => (
                "sms_failed",
                json!({"purpose": purpose, "failed": reason}),
                EventType::SmsFailed,
            ),
        })
    }
}

/// How a party answered a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done; `result` is what the party gave back (an order id, a waybill), no personal data.
    Done { result: Value },
    /// Refused for good (an invalid phone number); `reason` names why, no personal data.
    Refused { reason: String },
}

/// The data of an `effect.<party>.done` event: the command and the party's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectReport {
    pub purpose: String,
    pub command: Effect,
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl EffectReport {
    /// The report in an event's `data`; a report that does not decode names the field at fault.
    pub fn from_data(data: &Value) -> Result<EffectReport, String> {
        let report: EffectReport =
            serde_json::from_value(data.clone()).map_err(|e| format!("effect report: {e}"))?;
        if report.purpose != report.command.purpose() {
            return Err(format!(
                "effect report: purpose `{}` is not the command's",
                report.purpose.chars().take(48).collect::<String>()
            ));
        }
        Ok(report)
    }

    /// The result of a done effect, or `None` when the party refused.
    pub fn result(&self) -> Option<&Value> {
        match &self.outcome {
            Outcome::Done { result } => Some(result),
            Outcome::Refused { .. } => None,
        }
    }

    /// A string field of the result (`gateway_order_id`, `waybill`, …).
    pub fn text(&self, field: &str) -> Result<String, String> {
        self.result()
            .and_then(|r| r.get(field))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("effect report of {}: no `{field}`", self.purpose))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_keys_are_the_ones_parties_know() {
        let sms = Effect::Sms {
            name: "correction_requested:2".into(),
            purpose: "correction_requested".into(),
            template: "correction_requested".into(),
            params: BTreeMap::new(),
            text: String::new(),
        };
        assert_eq!(sms.purpose(), "sms:correction_requested:2");
        assert_eq!(sms.idempotency_key("c"), "c:correction_requested:2");
        assert_eq!(
            Effect::PaymentOrder { amount_cny: 120 }.idempotency_key("c"),
            "c:fee"
        );
        let review = Effect::ReviewAssignment {
            round: 2,
            preferred_reviewer: None,
        };
        assert_eq!(review.purpose(), "review_assignment:2");
        assert_eq!(review.party(), Party::Desk);
        assert!(!sms.needs_decision() && review.needs_decision());
        for p in Party::ALL {
            assert_eq!(Party::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn a_report_round_trips_and_a_bad_one_names_the_field() {
        let report = EffectReport {
            purpose: "shipment".into(),
            command: Effect::Shipment,
            outcome: Outcome::Done {
                result: json!({"waybill": "SF1"}),
            },
        };
        let data = serde_json::to_value(&report).unwrap();
        assert_eq!(data["outcome"], "done");
        assert_eq!(EffectReport::from_data(&data).unwrap(), report);
        assert_eq!(report.text("waybill").unwrap(), "SF1");
        assert!(report.text("hall").unwrap_err().contains("hall"));
        let mut bad = data.clone();
        bad["outcome"] = json!("maybe");
        assert!(EffectReport::from_data(&bad).unwrap_err().contains("maybe"));
        let mut wrong = data;
        wrong["purpose"] = json!("pickup_notice");
        assert!(EffectReport::from_data(&wrong).is_err());
    }
}
