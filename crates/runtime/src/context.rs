//! What a handler sees: the delivery's transaction, the incoming event, and the means to move a
//! case along the lifecycle, record effects and emit events — all committed together.

use serde_json::{Value, json};
use wangban_domain::application::Application;
use wangban_domain::effects::{Effect, EffectReport, Party};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::ids::EventId;
use wangban_domain::lifecycle::{State, Step};
use wangban_providers::ProviderError;
use wangban_store::{CaseRecord, CaseTx, StoreError};

/// A handler error, classified once: what the runtime should do with the message.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// Retry with backoff (database or broker away, a provider's 5xx, an event that arrived early).
    #[error("{0}")]
    Transient(String),
    /// Dead-letter with this reason (malformed content, a contract violation). Never personal data.
    #[error("{0}")]
    Permanent(String),
    /// The event arrived before the one it follows (a party's answer before the record of its
    /// request): tried again a few times, then put back at the tail of its queue, behind what
    /// it follows, until it has waited [`crate::RuntimeConfig::early_wait`] since it was first
    /// put back.
    #[error("{0}")]
    Early(String),
}

impl HandlerError {
    /// Whether the runtime should retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, HandlerError::Transient(_) | HandlerError::Early(_))
    }

    /// Whether the event came early.
    pub fn is_early(&self) -> bool {
        matches!(self, HandlerError::Early(_))
    }
}

impl From<StoreError> for HandlerError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            HandlerError::Transient(e.to_string())
        } else {
            HandlerError::Permanent(e.to_string())
        }
    }
}

impl From<ProviderError> for HandlerError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Transient(m) => HandlerError::Transient(format!("provider: {m}")),
            ProviderError::Permanent(m) => HandlerError::Permanent(format!("provider: {m}")),
        }
    }
}

/// The result of [`Cx::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    /// The case moved to this state.
    Applied(State),
    /// The lifecycle does not allow the step; the refusal is in the audit log.
    Refused,
}

/// A handler's view of one delivery.
pub struct Cx<'a> {
    tx: &'a mut CaseTx,
    worker: &'static str,
    cause: &'a Envelope,
    publishes: &'a [EventType],
    gathered: Option<crate::Gathered>,
    outgoing: Vec<Envelope>,
    requested: Vec<Party>,
}

fn fresh_event_id() -> EventId {
    EventId::from_random(*uuid::Uuid::new_v4().as_bytes())
}

impl<'a> Cx<'a> {
    pub(crate) fn new(
        tx: &'a mut CaseTx,
        worker: &'static str,
        cause: &'a Envelope,
        publishes: &'a [EventType],
        gathered: Option<crate::Gathered>,
    ) -> Self {
        Cx {
            tx,
            worker,
            cause,
            publishes,
            gathered,
            outgoing: Vec::new(),
            requested: Vec::new(),
        }
    }

    /// The events to queue and the parties whose executors have new commands.
    pub(crate) fn into_parts(self) -> (Vec<Envelope>, Vec<Party>) {
        (self.outgoing, self.requested)
    }

    /// Asks a party for `effect` on `case`: committed with this decision, carried out after the
    /// commit by the party's executor, whose answer comes back as an `effect.<party>.done` event
    /// (or, for an SMS, is recorded on the case). Once per `(case, purpose)`: false, and nothing
    /// changes, when it was requested before.
    pub async fn request(
        &mut self,
        case: &CaseRecord,
        effect: &Effect,
    ) -> Result<bool, HandlerError> {
        let command = serde_json::to_string(effect)
            .map_err(|e| HandlerError::Permanent(format!("effect command: {e}")))?;
        let party = effect.party();
        let fresh = self
            .tx
            .request_effect(
                &case.case_id,
                &effect.purpose(),
                party.as_str(),
                &command,
                self.cause.id.as_str(),
                self.cause.correlationid.as_str(),
            )
            .await?;
        if fresh && !self.requested.contains(&party) {
            self.requested.push(party);
        }
        Ok(fresh)
    }

    /// The party's answer an `effect.<party>.done` event carries; one that does not decode is a
    /// permanent error naming the field.
    pub fn report(event: &Envelope) -> Result<EffectReport, HandlerError> {
        EffectReport::from_data(&event.data).map_err(HandlerError::Permanent)
    }

    /// The transaction, for loading cases and recording effects.
    pub fn tx(&mut self) -> &mut CaseTx {
        self.tx
    }

    /// What the handler's [`crate::Handler::gather`] read for this delivery, as a `T`.
    pub fn gathered<T: std::any::Any + Send + Sync>(&self) -> Option<&T> {
        self.gathered.as_ref()?.downcast_ref::<T>()
    }

    /// The event being handled.
    pub fn cause(&self) -> &Envelope {
        self.cause
    }

    /// Schedules `deadline` for `case`, `deadline.after` the time the case entered its state; it
    /// is fired only if the transaction commits.
    pub async fn schedule(
        &mut self,
        case: &CaseRecord,
        deadline: crate::Deadline,
    ) -> Result<(), HandlerError> {
        let event = deadline.event(
            self.tx.clock(),
            self.worker,
            &case.case_id,
            Some(self.cause),
        );
        let mut event = event;
        event.emitted_by(wangban_domain::trace::SpanId::hop(
            self.worker,
            self.cause.id.as_str(),
        ));
        crate::may_publish(self.worker, self.publishes, &event)?;
        let due = case.state_since + deadline.after.as_millis() as i64;
        self.tx
            .schedule(&event, due, case.state.as_str(), self.worker)
            .await?;
        Ok(())
    }

    /// Queues an event about the case being handled; published only if the transaction commits.
    pub fn emit(&mut self, kind: EventType, data: Value) {
        let event = Envelope::new(
            fresh_event_id(),
            kind,
            &format!("/wangban/{}", self.worker),
            self.tx.clock().now(),
            self.cause.subject.clone(),
            Some(self.cause),
            data,
        );
        self.outgoing.push(event);
    }

    /// Appends an audit record about the case, tied to the event being handled.
    pub async fn audit(
        &mut self,
        case: &CaseRecord,
        kind: &str,
        detail: Value,
    ) -> Result<(), HandlerError> {
        let event_id = self.cause.id.to_string();
        self.tx
            .append_audit(&case.case_id, kind, Some(&event_id), &detail)
            .await?;
        Ok(())
    }

    /// Moves `case` along the lifecycle by `step`, with `detail` for the audit and the event.
    /// On success the case row, an audit record and a `case.<state>` event are written.
    /// A step that may become legal later (the event arrived before the one it follows) is a
    /// transient error, so the message is retried; any other refused step is recorded in the
    /// audit log and returned as [`StepOutcome::Refused`].
    pub async fn step(
        &mut self,
        case: &mut CaseRecord,
        step: Step,
        detail: Value,
    ) -> Result<StepOutcome, HandlerError> {
        self.step_with(case, step, detail, case.review_round, case.reviewer.clone())
            .await
    }

    /// [`Cx::step`], also setting the review round and reviewer.
    pub async fn step_with(
        &mut self,
        case: &mut CaseRecord,
        step: Step,
        detail: Value,
        review_round: i64,
        reviewer: Option<String>,
    ) -> Result<StepOutcome, HandlerError> {
        match case.state.apply(step) {
            Ok(to) => {
                let from = case.state;
                (case.version, case.state_since) = self
                    .tx
                    .set_state(case, to, review_round, reviewer.as_deref())
                    .await?;
                // The deadlines of the state it leaves no longer apply.
                self.tx
                    .cancel_scheduled(case.case_id.as_str(), from.as_str())
                    .await?;
                case.state = to;
                case.review_round = review_round;
                case.reviewer = reviewer;
                let record = json!({"from": from, "to": to, "step": step.as_str(), "by": self.worker,
                                    "cause": self.cause.event_type, "detail": detail});
                self.audit(case, "transition", record).await?;
                self.emit(
                    EventType::Entered(to),
                    json!({"from": from, "to": to, "step": step.as_str(), "detail": detail}),
                );
                Ok(StepOutcome::Applied(to))
            }
            Err(refusal) if refusal.may_succeed_later() => Err(HandlerError::Early(format!(
                "{refusal}: the case has not got there yet"
            ))),
            Err(refusal) => {
                let record = json!({"from": case.state, "step": step.as_str(), "by": self.worker,
                                    "cause": self.cause.event_type, "reason": refusal.to_string()});
                self.audit(case, "transition_refused", record).await?;
                tracing::info!(state = %case.state, step = step.as_str(), "step refused and recorded");
                Ok(StepOutcome::Refused)
            }
        }
    }

    /// The application stored with a case (parsed again: it was well-formed when stored).
    pub fn application(case: &CaseRecord) -> Result<Application, HandlerError> {
        Application::parse(case.application.as_bytes()).map_err(|e| {
            HandlerError::Permanent(format!("stored application of {}: {e}", case.case_id))
        })
    }

    /// Loads the case the event is about; a missing case is a permanent error.
    pub async fn case(&mut self) -> Result<CaseRecord, HandlerError> {
        let id = self.cause.subject.clone();
        self.tx
            .load_case(&id)
            .await?
            .ok_or_else(|| HandlerError::Permanent(format!("no case {id}")))
    }
}
