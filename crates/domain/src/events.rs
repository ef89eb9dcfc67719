//! Events on the bus: a versioned JSON envelope with the CloudEvents 1.0 attributes, and the
//! catalogue of event types.
//!
//! Every event is a past-tense fact. `subject` is always the case id, so one case can be followed
//! across workers; `correlationid` is the id of the submission that started the case's story and
//! `causationid` the event whose handling produced this one. The routing key is the type without
//! its `wangban.` prefix and `.v1` suffix (`case.accepted`). None of these attributes, nor the
//! routing key, ever holds personal data; only the `data` of the two submission events does.

use crate::effects::Party;
use crate::ids::{CaseId, EventId};
use crate::lifecycle::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The CloudEvents version of the envelope.
pub const SPEC_VERSION: &str = "1.0";
/// The version suffix of every event type this build understands.
pub const SCHEMA_VERSION: &str = "v1";

/// Where an event comes from (the CloudEvents `source`), or is headed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// The portal hands over an application (data: the application JSON of domain.md §3).
    ApplicationSubmitted,
    /// The portal hands over a corrected application with the same `application_id`.
    ApplicationResubmitted,
    /// A reviewer decided (data: `decision`, and `items`/`message` or `reason`).
    ReviewDecided,
    /// The payment gateway reported a payment (data: `payment_id`, `amount_cny`, `status`).
    PaymentReported,
    /// A payment deadline of the fee worker's clock fell due (data: `deadline`: reminder|expiry).
    PaymentDeadline,
    /// A deadline of the review dispatcher's clock fell due (data: `deadline`: `escalate` with
    /// `round` — the review clock ran out —, or `correction` — no resubmission in time).
    ReviewDeadline,
    /// The card-production centre reported an order complete.
    ProductionReported,
    /// The courier reported a shipment status (data: `status`, `waybill`).
    CourierReported,
    /// The exit-entry hall reported a pickup document collected.
    PickupReported,
    /// The case entered a lifecycle state (data: `from`, `to`, `step` and details).
    Entered(State),
    /// The held document was invalidated (once, irreversibly).
    DocumentInvalidated,
    /// A corrected application passed intake again and returns to review.
    CaseResubmitted,
    /// An SMS was accepted by the gateway (data: `purpose`, `provider_id`).
    SmsSent,
    /// An SMS failed for good (data: `purpose`, `reason`).
    SmsFailed,
    /// The SMS gateway's delivery receipt (data: `purpose`, `provider_id`, `delivered`, `error`).
    SmsReported,
    /// A party carried out (or refused) an effect a worker asked for; for the worker that asked
    /// (data: an [`crate::effects::EffectReport`]).
    EffectDone(Party),
}

impl EventType {
    /// Every event type, for documentation and topology.
    pub fn all() -> Vec<EventType> {
        let mut all = vec![
            EventType::ApplicationSubmitted,
            EventType::ApplicationResubmitted,
            EventType::ReviewDecided,
            EventType::PaymentReported,
            EventType::PaymentDeadline,
            EventType::ReviewDeadline,
            EventType::ProductionReported,
            EventType::CourierReported,
            EventType::PickupReported,
            EventType::DocumentInvalidated,
            EventType::CaseResubmitted,
            EventType::SmsSent,
            EventType::SmsFailed,
            EventType::SmsReported,
        ];
        all.extend(Party::ALL.iter().map(|p| EventType::EffectDone(*p)));
        all.extend(
            State::ALL
                .iter()
                .filter(|s| **s != State::Submitted)
                .map(|s| EventType::Entered(*s)),
        );
        all
    }

    /// The routing key: `case.accepted`, `application.submitted`, …
    pub fn routing_key(self) -> String {
        match self {
            EventType::ApplicationSubmitted => "application.submitted".into(),
            EventType::ApplicationResubmitted => "application.resubmitted".into(),
            EventType::ReviewDecided => "review.decided".into(),
            EventType::PaymentReported => "payment.reported".into(),
            EventType::PaymentDeadline => "payment.deadline".into(),
            EventType::ReviewDeadline => "review.deadline".into(),
            EventType::ProductionReported => "production.reported".into(),
            EventType::CourierReported => "courier.reported".into(),
            EventType::PickupReported => "pickup.reported".into(),
            EventType::Entered(s) => format!("case.{}", s.as_str()),
            EventType::DocumentInvalidated => "document.invalidated".into(),
            EventType::CaseResubmitted => "case.resubmitted".into(),
            EventType::SmsSent => "sms.sent".into(),
            EventType::SmsFailed => "sms.failed".into(),
            EventType::SmsReported => "sms.reported".into(),
            EventType::EffectDone(p) => format!("effect.{}.done", p.as_str()),
        }
    }

    /// The CloudEvents `type`: `wangban.case.accepted.v1`.
    pub fn type_name(self) -> String {
        format!("wangban.{}.{SCHEMA_VERSION}", self.routing_key())
    }

    /// The event type of a CloudEvents `type` string. Allocation-free: every delivery asks.
    pub fn parse(type_name: &str) -> Option<EventType> {
        let key = type_name
            .strip_prefix("wangban.")?
            .strip_suffix(SCHEMA_VERSION)?
            .strip_suffix('.')?;
        EventType::from_routing_key(key)
    }

    /// The event type of a routing key. Allocation-free.
    pub fn from_routing_key(key: &str) -> Option<EventType> {
        Some(match key {
            "application.submitted" => EventType::ApplicationSubmitted,
            "application.resubmitted" => EventType::ApplicationResubmitted,
            "review.decided" => EventType::ReviewDecided,
            "payment.reported" => EventType::PaymentReported,
            "payment.deadline" => EventType::PaymentDeadline,
            "review.deadline" => EventType::ReviewDeadline,
            "production.reported" => EventType::ProductionReported,
            "courier.reported" => EventType::CourierReported,
            "pickup.reported" => EventType::PickupReported,
            "document.invalidated" => EventType::DocumentInvalidated,
            "case.resubmitted" => EventType::CaseResubmitted,
            "sms.sent" => EventType::SmsSent,
            "sms.failed" => EventType::SmsFailed,
            "sms.reported" => EventType::SmsReported,
            _ => {
                if let Some(state) = key.strip_prefix("case.") {
                    return State::parse(state)
                        .filter(|s| *s != State::Submitted)
                        .map(EventType::Entered);
                }
                let party = key.strip_prefix("effect.")?.strip_suffix(".done")?;
                return Party::parse(party).map(EventType::EffectDone);
            }
        })
    }
}

/// The envelope of every message on the bus.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub specversion: String,
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub source: String,
    pub time: DateTime<Utc>,
    pub subject: CaseId,
    pub datacontenttype: String,
    pub correlationid: EventId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<EventId>,
    /// W3C trace context of the span that emitted the event (CloudEvents' distributed tracing
    /// extension; [`crate::trace`]): the trace of its case and the hop or effect it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: Value,
}

/// Why bytes are not an envelope this build can handle. Never quotes the payload.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("envelope is not valid JSON: {0}")]
    NotJson(String),
    #[error("envelope field {0}")]
    Field(String),
    #[error("envelope specversion `{0}` is not supported (expected 1.0)")]
    SpecVersion(String),
    #[error("event type `{0}` is unknown or of an unsupported version")]
    UnknownType(String),
}

impl Envelope {
    /// A new event of `event_type` about `subject`, caused by `cause` (or starting a story).
    pub fn new(
        id: EventId,
        event_type: EventType,
        source: &str,
        time: DateTime<Utc>,
        subject: CaseId,
        cause: Option<&Envelope>,
        data: Value,
    ) -> Envelope {
        Envelope {
            specversion: SPEC_VERSION.into(),
            correlationid: cause.map_or_else(|| id.clone(), |c| c.correlationid.clone()),
            causationid: cause.map(|c| c.id.clone()),
            id,
            event_type: event_type.type_name(),
            source: source.into(),
            time,
            subject,
            datacontenttype: "application/json".into(),
            traceparent: None,
            data,
        }
    }

    /// The trace and parent span the event names (`traceparent`), if valid.
    pub fn trace_context(&self) -> Option<(crate::trace::TraceId, crate::trace::SpanId)> {
        self.traceparent
            .as_deref()
            .and_then(crate::trace::parse_traceparent)
    }

    /// Marks the event as emitted by `span` of its case's trace.
    pub fn emitted_by(&mut self, span: crate::trace::SpanId) {
        let trace = crate::trace::TraceId::of_case(self.subject.as_str());
        self.traceparent = Some(crate::trace::traceparent(trace, span));
    }

    /// The parsed event type (always known for an envelope from [`Envelope::decode`]).
    pub fn kind(&self) -> Option<EventType> {
        EventType::parse(&self.event_type)
    }

    /// The routing key under which the event is published.
    pub fn routing_key(&self) -> String {
        self.kind()
            .map_or_else(|| "unknown".into(), EventType::routing_key)
    }

    /// Decodes and checks an envelope: size limit, JSON, CloudEvents version, a known type.
    pub fn decode(bytes: &[u8], limit: usize) -> Result<Envelope, DecodeError> {
        if bytes.len() > limit {
            return Err(DecodeError::TooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            DecodeError::NotJson(format!(
                "{:?} error at line {} column {}",
                e.classify(),
                e.line(),
                e.column()
            ))
        })?;
        let spec = value
            .get("specversion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if spec != SPEC_VERSION {
            return Err(DecodeError::SpecVersion(spec.chars().take(16).collect()));
        }
        let envelope: Envelope = serde_json::from_value(value).map_err(|e| {
            // serde names the field ("missing field `subject`"); it does not quote values for
            // these types beyond the invalid id text, which is never personal data.
            DecodeError::Field(e.to_string())
        })?;
        if envelope.kind().is_none() {
            return Err(DecodeError::UnknownType(
                envelope.event_type.chars().take(64).collect(),
            ));
        }
        Ok(envelope)
    }

    /// The JSON bytes of the envelope.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Envelope {
        let case: CaseId = "case_0123456789abcdef01234567".parse().unwrap();
        Envelope::new(
            EventId::derived(&["x"]),
            EventType::Entered(State::Accepted),
            "/wangban/intake",
            "2026-11-25T01:30:00Z".parse().unwrap(),
            case,
            None,
            json!({"from": "submitted", "to": "accepted"}),
        )
    }

    #[test]
    fn round_trip_and_attributes() {
        let e = sample();
        assert_eq!(e.event_type, "wangban.case.accepted.v1");
        assert_eq!(e.routing_key(), "case.accepted");
        assert_eq!(e.correlationid, e.id);
        let back = Envelope::decode(&e.encode(), 1 << 20).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn causation_and_correlation_follow_the_cause() {
        let cause = sample();
        let next = Envelope::new(
            EventId::derived(&["y"]),
            EventType::Entered(State::UnderReview),
            "/wangban/review",
            cause.time,
            cause.subject.clone(),
            Some(&cause),
            json!({}),
        );
        assert_eq!(next.causationid.as_ref(), Some(&cause.id));
        assert_eq!(next.correlationid, cause.correlationid);
    }

    #[test]
    fn refusals_are_specific() {
        let mut v = serde_json::to_value(sample()).unwrap();
        assert!(matches!(
            Envelope::decode(&[b' '; 100], 10),
            Err(DecodeError::TooLarge { .. })
        ));
        assert!(matches!(
            Envelope::decode(b"\xff\xfe", 100),
            Err(DecodeError::NotJson(_))
        ));
        v["specversion"] = json!("0.3");
        assert!(matches!(
            Envelope::decode(v.to_string().as_bytes(), 10_000),
            Err(DecodeError::SpecVersion(_))
        ));
        v["specversion"] = json!("1.0");
        v["type"] = json!("wangban.case.accepted.v2");
        assert!(matches!(
            Envelope::decode(v.to_string().as_bytes(), 10_000),
            Err(DecodeError::UnknownType(_))
        ));
        v["type"] = json!("wangban.case.accepted.v1");
        v.as_object_mut().unwrap().remove("subject");
        let err = Envelope::decode(v.to_string().as_bytes(), 10_000).unwrap_err();
        assert!(err.to_string().contains("subject"), "{err}");
    }

    #[test]
    fn every_type_round_trips_through_its_name() {
        let all = EventType::all();
        assert_eq!(all.len(), 14 + 6 + 17);
        for t in all {
            assert_eq!(EventType::parse(&t.type_name()), Some(t));
            assert_eq!(EventType::from_routing_key(&t.routing_key()), Some(t));
            assert!(!t.routing_key().contains('#') && !t.routing_key().contains('*'));
        }
        for junk in [
            "case.submitted",
            "case.",
            "effect.sms",
            "effect..done",
            "wangban.case.accepted.v2",
            "wangban.case.acceptedv1",
            "application.submitted.v1",
        ] {
            assert_eq!(EventType::from_routing_key(junk), None, "{junk}");
            assert_eq!(EventType::parse(junk), None, "{junk}");
        }
    }
}

#[cfg(test)]
mod hostile_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// No byte string crashes envelope decoding; anything not a known v1 envelope is refused.
        #[test]
        fn arbitrary_bytes_never_crash(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = Envelope::decode(&bytes, 2048);
        }

        /// Every field of a valid envelope replaced by junk is refused with a reason, or still valid.
        #[test]
        fn junk_fields_are_refused(field in prop_oneof![Just("specversion"), Just("id"), Just("type"), Just("time"),
                                                         Just("subject"), Just("correlationid"), Just("data")],
                                   junk in prop_oneof![Just(serde_json::json!(null)), Just(serde_json::json!(7)),
                                                       Just(serde_json::json!("x")), Just(serde_json::json!([1]))]) {
            let case: CaseId = "case_0123456789abcdef01234567".parse().unwrap();
            let e = Envelope::new(EventId::derived(&["p"]), EventType::Entered(State::Paid), "/t",
                                  "2026-11-25T00:00:00Z".parse().unwrap(), case, None, serde_json::json!({}));
            let mut v = serde_json::to_value(&e).unwrap();
            v[field] = junk;
            match Envelope::decode(v.to_string().as_bytes(), 1 << 20) {
                Ok(d) => prop_assert_eq!(field, "data", "{:?}", d),
                Err(reason) => prop_assert!(!reason.to_string().is_empty()),
            }
        }
    }
}
