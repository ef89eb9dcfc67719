//! A worker's decision about one event, as data: computed by a pure function of the case and the
//! event (tested with no broker and no database), applied by [`Cx::apply`] in the delivery's
//! transaction — all of it or none.

use crate::{Cx, HandlerError, StepOutcome};
use serde_json::Value;
use std::time::Duration;
use wangban_domain::clock::Clock;
use wangban_domain::effects::Effect;
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::ids::{CaseId, EventId};
use wangban_domain::lifecycle::Step;
use wangban_store::CaseRecord;

/// What to do with the case, in the order it is applied: record the party's answers the step
/// rests on, take the step, write the audit records, request the effects, emit the events,
/// schedule the deadlines.
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
    /// Deadlines: events fired once their time has come.
    pub schedule: Vec<Deadline>,
}

/// An event to fire `after` the case entered the state it is in once the decision is applied
/// (the state's own clock: the payment window, the correction window). Its id is derived from
/// the case and `key`, so a deadline decided twice is scheduled once and delivered once.
#[derive(Clone, Debug, PartialEq)]
pub struct Deadline {
    pub kind: EventType,
    pub data: Value,
    pub key: Vec<String>,
    pub after: Duration,
}

impl Deadline {
    /// The event `worker` schedules for `case`, timed by `clock`.
    pub(crate) fn event(
        &self,
        clock: &Clock,
        worker: &str,
        case: &CaseId,
        cause: Option<&Envelope>,
    ) -> Envelope {
        let mut key: Vec<&str> = vec![case.as_str()];
        key.extend(self.key.iter().map(String::as_str));
        Envelope::new(
            EventId::derived(&key),
            self.kind,
            &format!("/wangban/{worker}/clock"),
            clock.now(),
            case.clone(),
            cause,
            self.data.clone(),
        )
    }
}

impl crate::Runtime {
    /// Schedules `deadline` for `case` (a stored case id) in `state`, `deadline.after` the time
    /// `entered_at` (ms) the case entered it: for deadlines of cases already waiting when a
    /// worker starts. A deadline already waiting stays as it is.
    pub async fn schedule(
        &self,
        worker: &str,
        case: &str,
        state: wangban_domain::lifecycle::State,
        entered_at: i64,
        deadline: Deadline,
    ) -> Result<(), HandlerError> {
        let case: CaseId = case
            .parse()
            .map_err(|e: String| HandlerError::Permanent(format!("stored case id: {e}")))?;
        let event = deadline.event(self.store.clock(), worker, &case, None);
        let due = entered_at + deadline.after.as_millis() as i64;
        self.store
            .schedule(&event, due, state.as_str(), worker)
            .await?;
        Ok(())
    }
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

    /// Also schedule `deadline` (see [`Deadline`]).
    pub fn scheduling(mut self, deadline: Deadline) -> Decision {
        self.schedule.push(deadline);
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
        for deadline in decision.schedule {
            self.schedule(case, deadline).await?;
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
