//! The parties' executors: effects carried out after the decision that asked for them committed.
//!
//! One executor per party claims its due commands (`effect_commands`), calls the party with no
//! transaction open and no case locked — up to [`RuntimeConfig::effect_concurrency`] calls at
//! once, so a slow party holds only its own slots — and then, in one short transaction, marks the
//! command done and records the answer: as an `effect.<party>.done` event for the worker that
//! asked, or (an SMS) straight on the case. Answers that come back while every recording
//! transaction is busy share the next one (up to [`RuntimeConfig::batch`], a savepoint each, in
//! case order): one commit for many calls; one that fails there is recorded alone. A transient
//! failure is tried again later with jittered exponential backoff; a permanent one, or one that
//! outlasts [`RuntimeConfig::effect_attempts`], leaves the command `dead` with its error on the
//! case's timeline, until an operator retries it.
//!
//! [`RuntimeConfig::effect_concurrency`]: crate::RuntimeConfig::effect_concurrency
//! [`RuntimeConfig::effect_attempts`]: crate::RuntimeConfig::effect_attempts
//! [`RuntimeConfig::batch`]: crate::RuntimeConfig::batch

use crate::Runtime;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tracing::Instrument;
use wangban_domain::effects::{Effect, EffectReport, Outcome, Party};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::ids::{CaseId, EventId};
use wangban_domain::trace::{SpanId, TraceId, traceparent};
use wangban_providers::ProviderError;
use wangban_store::{CaseRecord, CaseTx, EffectCommand, StoreError};

/// Carries out one party's effects: the adapter between a command and the party's API.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// The party.
    fn party(&self) -> Party;
    /// Carries out `effect` for `case` under the idempotency key `key`. Called with no
    /// transaction open; may take as long as the party takes.
    async fn execute(
        &self,
        case: &CaseRecord,
        effect: &Effect,
        key: &str,
    ) -> Result<Outcome, ProviderError>;
}

/// How often an executor looks for due commands when nothing woke it (commands of other
/// processes, retries falling due).
const POLL: Duration = Duration::from_millis(250);

/// A party's answer on its way to the executor's recorder, and where to say how it went.
struct Answer {
    command: EffectCommand,
    effect: Effect,
    outcome: Outcome,
    /// The attempt's span, as the call carried it.
    span: SpanId,
    recorded: oneshot::Sender<Result<(), StoreError>>,
}

impl Runtime {
    /// Wakes this process's executor of `party` (after a commit that requested its effects).
    pub(crate) fn wake_executor(&self, party: Party) {
        self.executor_wakeup(party).notify_one();
    }

    fn executor_wakeup(&self, party: Party) -> &tokio::sync::Notify {
        let i = Party::ALL.iter().position(|p| *p == party).unwrap_or(0);
        &self.effect_wakeups[i]
    }

    /// Carries out `executor`'s party's commands until `shutdown`; calls in flight finish first.
    pub async fn run_executor(
        &self,
        executor: Arc<dyn Executor>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let party = executor.party();
        let slots = Arc::new(Semaphore::new(self.config.effect_concurrency.max(1)));
        let lease_ms = self.config.effect_lease.as_millis() as i64;
        let mut calls = tokio::task::JoinSet::new();
        let mut pause = Duration::from_millis(50);
        let (answers, inbox) = mpsc::unbounded_channel();
        let recorder = tokio::spawn(self.clone().record_answers(party, inbox));
        tracing::info!(party = party.as_str(), "executor running");
        // Whether to look for due commands: at start, when woken (a commit requested some), on
        // the poll, and when a call ends while the last look found more than there were slots;
        // a look that finds no free slot waits for one.
        let mut look = true;
        let mut more_due = false;
        while !*shutdown.borrow() {
            let free = slots.available_permits();
            if look && free > 0 {
                match self
                    .store
                    .claim_effects(party.as_str(), free as i64, lease_ms)
                    .await
                {
                    Ok(commands) => {
                        pause = Duration::from_millis(50);
                        look = false;
                        more_due = commands.len() == free;
                        // The cases the calls need, in one read.
                        let ids: Vec<&str> = commands.iter().map(|c| c.case_id.as_str()).collect();
                        let cases = match self.store.case_records(&ids).await {
                            Ok(cases) => cases,
                            Err(e) => {
                                // The leases run out and the commands are claimed again.
                                tracing::warn!(party = party.as_str(), error = %e, "cannot read the cases of claimed commands; they wait for their lease");
                                continue;
                            }
                        };
                        for command in commands {
                            // (Two commands of one case share its record.)
                            let case = cases.get(&command.case_id).cloned();
                            let Ok(permit) = slots.clone().try_acquire_owned() else {
                                break; // cannot happen: we claimed only as many as were free
                            };
                            let (rt, ex, answers) =
                                (self.clone(), executor.clone(), answers.clone());
                            calls.spawn(async move {
                                rt.carry_out(ex.as_ref(), command, case, &answers).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(party = party.as_str(), error = %e, "cannot claim effects; retrying");
                        tokio::select! {
                            _ = tokio::time::sleep(pause) => {}
                            _ = shutdown.changed() => {}
                        }
                        pause = (pause * 2).min(Duration::from_secs(5));
                        continue;
                    }
                }
            }
            look |= tokio::select! {
                _ = self.executor_wakeup(party).notified() => true,
                Some(_) = calls.join_next(), if !calls.is_empty() => more_due,
                _ = tokio::time::sleep(POLL) => true,
                _ = shutdown.changed() => false,
            };
            // Every finished call is reaped now: joined one per wake-up, while commits keep
            // waking the executor, finished calls' task cells (~4.5 KB each) piled up by the
            // thousand (4.5 MiB in notify at 20 cases/s) until a quiet moment.
            while calls.try_join_next().is_some() {
                look |= more_due;
            }
        }
        while calls.join_next().await.is_some() {}
        drop(answers); // the recorder ends once it has recorded what the last calls answered
        let _ = recorder.await;
        tracing::info!(party = party.as_str(), "executor stopped");
    }

    /// One attempt at one command, to its end: done (once the recorder has recorded the
    /// answer), retried later, or dead.
    async fn carry_out(
        &self,
        executor: &dyn Executor,
        command: EffectCommand,
        case: Option<CaseRecord>,
        answers: &mpsc::UnboundedSender<Answer>,
    ) {
        let party = executor.party();
        let span = tracing::info_span!(
            "effect",
            party = party.as_str(),
            case_id = %command.case_id,
            purpose = %command.purpose,
            attempt = command.attempts,
        );
        async {
            let effect: Effect = match serde_json::from_str(&command.command) {
                Ok(e) => e,
                Err(e) => {
                    let error = format!("the command does not decode: {e}");
                    return self.abandon(party, &command, &error).await;
                }
            };
            let Some(case) = case else {
                return self.abandon(party, &command, "no such case").await;
            };
            let key = effect.idempotency_key(&command.case_id);
            let (started, wall) = (Instant::now(), std::time::SystemTime::now());
            let trace = TraceId::of_case(&command.case_id);
            let span = SpanId::effect(&command.case_id, &command.purpose, command.attempts);
            let answer = wangban_providers::TRACEPARENT
                .scope(
                    traceparent(trace, span),
                    executor.execute(&case, &effect, &key),
                )
                .await;
            let took = started.elapsed();
            if let Some(sink) = &self.spans {
                let label = match &answer {
                    Ok(Outcome::Done { .. }) => "done",
                    Ok(Outcome::Refused { .. }) => "refused",
                    Err(ProviderError::Transient(_)) => "transient",
                    Err(_) => "failed",
                };
                sink.finished(crate::telemetry::FinishedSpan {
                    trace,
                    span,
                    parent: Some(SpanId::hop(party.requested_by(), &command.cause_id)),
                    name: format!("effect {party} {}", effect.purpose()),
                    kind: crate::telemetry::SpanKind::Client,
                    start: wall,
                    end: std::time::SystemTime::now(),
                    attributes: vec![
                        ("wangban.party", party.as_str().into()),
                        ("wangban.purpose", command.purpose.clone()),
                        ("wangban.case_id", command.case_id.clone()),
                        ("wangban.attempt", command.attempts.to_string()),
                        ("wangban.outcome", label.into()),
                    ],
                    error: answer.as_ref().err().map(ToString::to_string),
                });
            }
            match answer {
                Ok(outcome) => {
                    let label = match outcome {
                        Outcome::Done { .. } => "done",
                        Outcome::Refused { .. } => "refused",
                    };
                    self.metrics.effect(party.as_str(), label, took);
                    let (recorded, settled) = oneshot::channel();
                    let answer = Answer { command, effect, outcome, span, recorded };
                    let settled = match answers.send(answer) {
                        Ok(()) => settled.await.unwrap_or_else(|_| {
                            Err(StoreError::Data("the executor's recorder stopped".into()))
                        }),
                        Err(_) => Err(StoreError::Data("the executor's recorder stopped".into())),
                    };
                    if let Err(e) = settled {
                        // The party has done it; the lease runs out and the same key asks again.
                        tracing::warn!(error = %e, "cannot record the party's answer; the command waits for its lease");
                    } else {
                        tracing::info!(outcome = label, took_ms = took.as_millis() as u64, "effect carried out");
                    }
                }
                Err(ProviderError::Transient(error))
                    if command.attempts < self.config.effect_attempts =>
                {
                    self.metrics.effect(party.as_str(), "retried", took);
                    let delay = self.effect_backoff(command.attempts);
                    tracing::info!(%error, retry_in_ms = delay.as_millis() as u64, "transient failure of the party; trying again later");
                    let at = self.store.clock().now_ms() + delay.as_millis() as i64;
                    if let Err(e) = self
                        .store
                        .retry_effect_at(&command.case_id, &command.purpose, &error, at)
                        .await
                    {
                        tracing::warn!(error = %e, "cannot schedule the next attempt; the command waits for its lease");
                    }
                }
                Err(e) => {
                    self.metrics.effect(party.as_str(), "dead", took);
                    self.abandon(party, &command, &e.to_string()).await;
                }
            }
        }
        .instrument(span)
        .await
    }

    /// The delay before attempt `attempts + 1`: exponential from `effect_retry_min`, at most
    /// `effect_retry_max`, jittered down by up to half so that retries of many commands spread.
    fn effect_backoff(&self, attempts: i64) -> Duration {
        let min = self.config.effect_retry_min;
        let exp = 2_u32.saturating_pow(attempts.clamp(1, 30) as u32 - 1);
        let full = min.saturating_mul(exp).min(self.config.effect_retry_max);
        let jitter = (uuid::Uuid::new_v4().as_u128() % 1000) as u32;
        full.mul_f64(0.5 + f64::from(jitter) / 2000.0)
    }

    /// Records the answers the calls send until every sender is gone, in up to
    /// [`RuntimeConfig::concurrency`](crate::RuntimeConfig::concurrency) transactions at once
    /// (one waiting for a case's lock holds up only its own answers). Answers that arrive while
    /// every transaction is busy share the next one (up to
    /// [`RuntimeConfig::batch`](crate::RuntimeConfig::batch)); an answer that fails there, or
    /// the whole lot when that transaction cannot commit, is recorded alone, with retries.
    async fn record_answers(self, party: Party, mut inbox: mpsc::UnboundedReceiver<Answer>) {
        let most = self.config.batch.max(1);
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut recording = tokio::task::JoinSet::new();
        while let Some(first) = inbox.recv().await {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                break; // never closed
            };
            let mut batch = vec![first];
            while batch.len() < most {
                match inbox.try_recv() {
                    Ok(answer) => batch.push(answer),
                    Err(_) => break,
                }
            }
            let rt = self.clone();
            recording.spawn(async move {
                rt.record(party, batch).await;
                drop(slot);
            });
            while recording.try_join_next().is_some() {}
        }
        while recording.join_next().await.is_some() {}
    }

    /// Records `batch`: together when there are several, then alone what that left.
    async fn record(&self, party: Party, batch: Vec<Answer>) {
        let alone = if batch.len() == 1 {
            batch
        } else {
            self.record_batch(party, batch).await
        };
        for answer in alone {
            let record = || async {
                let mut tx = self.store.begin().await?;
                let recorded = self.record_answer(&mut tx, party, &answer).await?;
                tx.commit().await?;
                Ok::<_, StoreError>(recorded)
            };
            let result = backon::Retryable::retry(record, self.backoff())
                .when(StoreError::is_transient)
                .await;
            if let Ok(recorded) = result {
                self.metrics.answers_recorded(party.as_str(), 1);
                self.recorded(recorded);
            }
            let _ = answer.recorded.send(result.map(|_| ()));
        }
    }

    /// Records `batch` in one transaction, a savepoint per answer, in the order of their cases
    /// (as a handler's batch locks them). Returns the answers left to record alone.
    async fn record_batch(&self, party: Party, mut batch: Vec<Answer>) -> Vec<Answer> {
        batch.sort_by(|a, b| {
            (&a.command.case_id, &a.command.purpose).cmp(&(&b.command.case_id, &b.command.purpose))
        });
        let results = async {
            let mut tx = self.store.begin().await?;
            let mut results = Vec::with_capacity(batch.len());
            for answer in &batch {
                tx.savepoint().await?;
                match self.record_answer(&mut tx, party, answer).await {
                    Ok(recorded) => {
                        tx.release_savepoint().await?;
                        results.push(Ok(recorded));
                    }
                    Err(e) => {
                        tx.rollback_to_savepoint().await?;
                        results.push(Err(e));
                    }
                }
            }
            tx.commit().await?;
            Ok::<_, StoreError>(results)
        }
        .await;
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                tracing::info!(party = party.as_str(), error = %e, "a batch of answers failed; recording them alone");
                return batch;
            }
        };
        let mut alone = Vec::new();
        let mut committed = 0;
        for (answer, result) in batch.into_iter().zip(results) {
            match result {
                Ok(recorded) => {
                    committed += 1;
                    self.recorded(recorded);
                    let _ = answer.recorded.send(Ok(()));
                }
                Err(e) => {
                    tracing::debug!(party = party.as_str(), error = %e, "an answer failed in a batch; recording it alone");
                    alone.push(answer);
                }
            }
        }
        if committed > 0 {
            self.metrics.answers_recorded(party.as_str(), committed);
        }
        alone
    }

    /// After a commit that recorded an answer: the relay has its event to publish. An early
    /// event waiting for a commit on the case is not woken: what it waits for is a step of the
    /// case, which only a handler takes (from this event, once relayed).
    fn recorded(&self, recorded: bool) {
        if recorded {
            self.relay_wakeup.committed();
        }
    }

    /// Marks the command done and records the party's answer in `tx`. False when the command
    /// is no longer pending (finished by another executor whose lease this one outlived): nothing
    /// is written.
    async fn record_answer(
        &self,
        tx: &mut CaseTx,
        party: Party,
        answer: &Answer,
    ) -> Result<bool, StoreError> {
        let Answer {
            command,
            effect,
            outcome,
            span,
            ..
        } = answer;
        let case: CaseId = command.case_id.parse().map_err(StoreError::Data)?;
        if !tx.finish_effect(&command.case_id, &command.purpose).await? {
            return Ok(false);
        }
        let (event_type, data) = match effect.recorded_answer(outcome) {
            Some((kind, detail, event_type)) => {
                tx.record_effect(&case, &command.purpose, &detail).await?;
                tx.append_audit(&case, kind, Some(&command.cause_id), &detail)
                    .await?;
                (event_type, detail)
            }
            None => {
                let report = EffectReport {
                    purpose: command.purpose.clone(),
                    command: effect.clone(),
                    outcome: outcome.clone(),
                };
                let data = serde_json::to_value(&report)
                    .map_err(|e| StoreError::Data(format!("effect report: {e}")))?;
                (EventType::EffectDone(party), data)
            }
        };
        let id = EventId::derived(&[case.as_str(), &command.purpose, "done"]);
        let mut event = Envelope::new(
            id,
            event_type,
            &format!("/wangban/effects/{party}"),
            self.store.clock().now(),
            case,
            None,
            data,
        );
        if let Ok(correlation) = command.correlation_id.parse() {
            event.correlationid = correlation;
        }
        event.causationid = command.cause_id.parse().ok();
        event.emitted_by(*span);
        tx.enqueue(&event, party.requested_by()).await?;
        Ok(true)
    }

    /// Gives up on a command: `dead`, with the error on the case's timeline for an operator.
    async fn abandon(&self, party: Party, command: &EffectCommand, error: &str) {
        tracing::warn!(%error, "effect abandoned; an operator can retry it");
        let record = || async {
            let mut tx = self.store.begin().await?;
            if !tx
                .abandon_effect(&command.case_id, &command.purpose, error)
                .await?
            {
                return Ok(());
            }
            if let Ok(case) = command.case_id.parse::<CaseId>() {
                let detail = json!({"purpose": command.purpose, "party": party.as_str(),
                                    "attempts": command.attempts, "error": error});
                match tx
                    .append_audit(&case, "effect_failed", Some(&command.cause_id), &detail)
                    .await
                {
                    Ok(_) | Err(StoreError::Data(_)) => {} // no such case: nothing to record on
                    Err(e) => return Err(e),
                }
            }
            tx.commit().await
        };
        if let Err(e) = backon::Retryable::retry(record, self.backoff())
            .when(StoreError::is_transient)
            .await
        {
            tracing::warn!(error = %e, "cannot mark the effect dead; the command waits for its lease");
        }
    }
}
