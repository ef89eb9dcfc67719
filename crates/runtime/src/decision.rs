//! A worker's decision about one event, as data: computed by a pure function of the case and the
//! event (tested with no broker and no database), applied by [`Cx::apply`] in the delivery's
//! transaction — all of it or none.

use crate::{Cx, HandlerError, StepOutcome};
use serde_json::Value;
use wangban_domain::effects::Effect;
use wangban_domain::events::EventType;
use wangban_domain::lifecycle::Step;
use wangban_store::CaseRecord;

/// What to do with the case, in the order it is applied: record the party's answers the step
/// rests on, take the step, write the audit records, request the effects, emit the events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Decision {
    /// `effects` rows: `(purpose, detail)`.
    pub record: Vec<(String, Value)>,
    /// The lifecycle step and its detail.
    pub step: Option<(Step, Value)>,
    /// Audit records: `(kind, detail)`.
    pub audit: Vec<(&'static str, Value)>,
    /// Effects to ask the parties for.
    pub request: Vec<Effect>,
    /// Events about the case.
    pub emit: Vec<(EventType, Value)>,
}

impl Decision {
    /// Nothing to do (a stale timer, a repeated answer).
    pub fn nothing() -> Decision {
        Decision::default()
    }

    /// Take `step` with `detail`.
    pub fn step(step: Step, detail: Value) -> Decision {
        Decision {
            step: Some((step, detail)),
            ..Decision::default()
        }
    }

    /// Write one audit record.
    pub fn audit(kind: &'static str, detail: Value) -> Decision {
        Decision {
            audit: vec![(kind, detail)],
            ..Decision::default()
        }
    }

    /// Ask a party for `effect`.
    pub fn request(effect: Effect) -> Decision {
        Decision {
            request: vec![effect],
            ..Decision::default()
        }
    }

    /// Also record the party's answer `detail` as the effect `purpose`.
    pub fn recording(mut self, purpose: &str, detail: Value) -> Decision {
        self.record.push((purpose.to_owned(), detail));
        self
    }

    /// Also ask a party for `effect`.
    pub fn requesting(mut self, effect: Effect) -> Decision {
        self.request.push(effect);
        self
    }
}

impl Cx<'_> {
    /// Applies `decision` to `case` in this transaction. A step that may become legal later is
    /// an early event ([`HandlerError::Early`]: nothing is applied); a step the lifecycle refuses
    /// is recorded as refused and the rest of the decision still applies.
    pub async fn apply(
        &mut self,
        case: &mut CaseRecord,
        decision: Decision,
    ) -> Result<Option<StepOutcome>, HandlerError> {
        for (purpose, detail) in &decision.record {
            self.tx()
                .record_effect(&case.case_id, purpose, detail)
                .await?;
        }
        let outcome = match decision.step {
            Some((step, detail)) => Some(self.step(case, step, detail).await?),
            None => None,
        };
        for (kind, detail) in decision.audit {
            self.audit(case, kind, detail).await?;
        }
        for effect in &decision.request {
            self.request(case, effect).await?;
        }
        for (kind, data) in decision.emit {
            self.emit(kind, data);
        }
        Ok(outcome)
    }
}

/// A case in `state` with placeholder fields (a passport by courier, round 1), for table tests
/// of decisions: override what a test needs with `CaseRecord { …, ..case_in(state) }`.
pub fn case_in(state: wangban_domain::lifecycle::State) -> CaseRecord {
    CaseRecord {
        case_id: "case_0123456789abcdef01234567"
            .parse()
            .expect("a valid case id"),
        application_id: "APP-1".into(),
        document_kind: Some("passport".into()),
        delivery_method: "courier".into(),
        state,
        version: 3,
        review_round: 1,
        reviewer: None,
        application: "{}".into(),
        created_at: 0,
        state_since: 0,
    }
}
