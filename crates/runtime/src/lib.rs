//! The runtime every worker shares, so that a worker crate is only its handler.
//!
//! For each delivery: decode the envelope (refused → dead letter), then in **one transaction**:
//! skip if the inbox has seen the event, run the handler (which reads and changes the case,
//! records effects and queues events), queue the outgoing events in the outbox, mark the inbox;
//! commit; ack. Deliveries that arrive while every transaction is busy share the next one (up to
//! [`RuntimeConfig::batch`], a savepoint each, acked after its commit): one WAL flush for many
//! hops; a delivery that fails in a batch is rolled back to its savepoint and handled alone, except
//! that one found early is first tried again after each later delivery of its case that the batch
//! handles (what it follows often arrives right behind it).
//! Transient failures are retried with exponential backoff (`backon`); permanent ones,
//! and transient ones that outlast the retries, are dead-lettered with their reason — in the store
//! (for operators and replay) and in the worker's dead-letter queue — and then acked. If even the
//! dead letter cannot be recorded, the delivery is requeued: nothing is ever dropped.
//!
//! The relay ([`relay`]) publishes committed outbox rows with publisher confirms, and the parties'
//! executors ([`effects`]) carry out the effects handlers requested, after the commit.

mod commits;
mod context;
mod decision;
mod early;
pub mod effects;
pub mod ingress;
pub mod metrics;
pub mod relay;
pub mod telemetry;

/// Now, in milliseconds since the Unix epoch: the time every record of the store carries.
use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
pub use context::{Cx, HandlerError, StepOutcome};
pub use decision::{Deadline, Decision, case_in};
pub use effects::Executor;
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use tokio::sync::{Notify, Semaphore, watch};
use tracing::{Instrument, info_span};
use wangban_bus::{Bus, DeadLetterNote, Delivery, WorkerQueue};
use wangban_domain::effects::Party;
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::Step;
use wangban_domain::trace::{SpanId, TraceId};
/// The case as stored, as a worker's decision sees it.
pub use wangban_store::CaseRecord;
use wangban_store::Store;

/// A worker: the routing keys it consumes and how it handles one event.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The worker's name; also its queue's.
    fn worker(&self) -> &'static str;
    /// The routing-key patterns of the events it consumes.
    fn bindings(&self) -> Vec<String>;
    /// The lifecycle steps its decisions take (each emits `case.<state>`).
    fn steps(&self) -> Vec<Step>;
    /// The other events its decisions emit or schedule. With [`Handler::steps`] and its
    /// parties' answers this is all its process may publish ([`publishes`]): the broker user of
    /// the worker is allowed these routing keys and no other, and a decision emitting anything
    /// else is refused (dead-lettered, naming the event).
    fn emits(&self) -> Vec<EventType>;
    /// Reads what the decision needs from outside (an object store, say) before the delivery's
    /// transaction begins, so that no database connection or row lock waits on it; the handler
    /// finds it in [`Cx::gathered`]. A transient error retries the delivery like any other.
    async fn gather(&self, _event: &Envelope) -> Result<Option<Gathered>, HandlerError> {
        Ok(None)
    }
    /// Handles one event inside the delivery's transaction.
    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError>;
    /// Work on a clock (timers); called every [`RuntimeConfig::tick`] when the worker runs.
    async fn tick(&self, _runtime: &Runtime) -> Result<(), HandlerError> {
        Ok(())
    }
    /// Whether several deliveries may share a transaction ([`RuntimeConfig::batch`]). A batch
    /// locks its cases in id order, so it cannot deadlock with another on case rows; a handler
    /// that also locks a row shared by many cases — the staffed review desk its office — says
    /// no, or two batches could each hold what the other's next delivery needs.
    fn batches(&self) -> bool {
        true
    }
}

/// What [`Handler::gather`] read for one delivery; the handler downcasts it
/// ([`Cx::gathered`]).
pub type Gathered = Arc<dyn std::any::Any + Send + Sync>;

/// The queue of a handler and the routing keys its process publishes, for the topology.
pub fn worker_queue(h: &dyn Handler) -> WorkerQueue {
    WorkerQueue {
        worker: h.worker().to_owned(),
        bindings: h.bindings(),
        publishes: publishes(h).iter().map(|k| k.routing_key()).collect(),
    }
}

/// Every event a worker's process publishes: the transitions of its steps, what its decisions
/// emit and schedule, and the answers of the parties whose executors run beside it.
pub fn publishes(h: &dyn Handler) -> Vec<EventType> {
    let mut kinds: Vec<EventType> = h
        .steps()
        .into_iter()
        .map(|step| EventType::Entered(step.edge().1))
        .collect();
    kinds.extend(h.emits());
    for party in Party::ALL {
        if party.requested_by() == h.worker() {
            kinds.extend(party.answers());
        }
    }
    let mut unique = Vec::with_capacity(kinds.len());
    for k in kinds {
        if !unique.contains(&k) {
            unique.push(k);
        }
    }
    unique
}

/// Refuses an event `worker` may not publish (its broker user could not): a bug in the worker's
/// [`Handler::steps`] or [`Handler::emits`], dead-lettered with its name rather than left to
/// stall the relay.
pub(crate) fn may_publish(
    worker: &str,
    publishes: &[EventType],
    event: &Envelope,
) -> Result<(), HandlerError> {
    if event.kind().is_some_and(|k| publishes.contains(&k)) {
        Ok(())
    } else {
        Err(HandlerError::Permanent(format!(
            "worker {worker} may not publish {}: not among its steps' transitions, its emits or its parties' answers",
            event.routing_key()
        )))
    }
}

/// What a handled delivery leaves for after its commit.
struct Handled {
    /// The parties whose executors have new commands.
    parties: Vec<Party>,
    /// Whether it queued events (the relay has something to publish).
    emitted: bool,
}

/// What one worker may publish ([`publishes`]).
type Publishes = Arc<[EventType]>;

/// Tries of an event that arrived early before it is put back behind what it follows.
const EARLY_TRIES: u32 = 3;

/// Tunables of the consumer loop.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Messages larger than this are refused unread.
    pub max_message_bytes: usize,
    /// Unacknowledged deliveries per worker consumer.
    pub prefetch: u16,
    /// Attempts one worker runs at once, each in its own transaction (deliveries waiting to be
    /// retried hold none). Several commits in flight let PostgreSQL flush them together (group
    /// commit); events of one case that meet take turns on the case's row lock.
    pub concurrency: usize,
    /// Deliveries one transaction handles at most (a savepoint each): those that arrived while
    /// every transaction was busy share the next one's commit.
    pub batch: usize,
    /// First retry delay of a transient failure.
    pub retry_min: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Retries of a transient failure before the message is dead-lettered.
    pub retry_times: usize,
    /// Period of handlers' timers.
    pub tick: Duration,
    /// Calls one party's executor makes at once (per process).
    pub effect_concurrency: usize,
    /// Attempts at an effect before it is left `dead` for an operator.
    pub effect_attempts: i64,
    /// How long a claimed effect is not claimed again: the longest a call may take before
    /// another executor (or this one, after a crash) tries the same key again.
    pub effect_lease: Duration,
    /// First delay before an effect is tried again after a transient failure.
    pub effect_retry_min: Duration,
    /// Longest delay between attempts at an effect.
    pub effect_retry_max: Duration,
    /// How long an event that arrived early (before the record it follows) is put back behind
    /// what it follows, from the first time, before it is dead-lettered: longer than an effect's
    /// lease, so an answer whose request's executor crashed waits for the retried request.
    pub early_wait: Duration,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_message_bytes: 256 * 1024,
            prefetch: 32,
            concurrency: 8,
            batch: 16,
            retry_min: Duration::from_millis(20),
            retry_max: Duration::from_secs(2),
            retry_times: 12,
            tick: Duration::from_secs(5),
            effect_concurrency: 64,
            effect_attempts: 30,
            effect_lease: Duration::from_secs(30),
            effect_retry_min: Duration::from_millis(200),
            effect_retry_max: Duration::from_secs(30),
            early_wait: Duration::from_secs(120),
        }
    }
}

/// The shared machinery: store, bus, relay signal, configuration. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub store: Store,
    pub bus: Arc<dyn Bus>,
    pub config: RuntimeConfig,
    pub metrics: Arc<metrics::Metrics>,
    /// Set once the bus topology has been declared (readiness).
    pub declared: Arc<std::sync::atomic::AtomicBool>,
    relay_wakeup: Arc<relay::RelayWakeup>,
    /// This process's commits by case, for events that arrived before what they follow.
    commits: Arc<commits::Commits>,
    /// Early events put back, since when ([`early`]).
    early: Arc<early::Early>,
    /// Where finished spans go (`None`: no tracing).
    spans: Option<Arc<dyn telemetry::SpanSink>>,
    /// One per party ([`wangban_domain::effects::Party::ALL`] order): wakes its executor.
    effect_wakeups: Arc<[Notify; 6]>,
    /// [`publishes`] of each worker this process runs, worked out once.
    publishing: Arc<std::sync::Mutex<Vec<(&'static str, Publishes)>>>,
}

/// How a delivery ended, for tests that step a worker one delivery at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Handled,
    Duplicate,
    DeadLettered(String),
    Requeued(String),
    /// Early: put back at the tail of its queue, behind what it follows.
    Deferred,
}

impl Outcome {
    /// The outcome's label in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Handled => "handled",
            Outcome::Duplicate => "duplicate",
            Outcome::DeadLettered(_) => "dead_lettered",
            Outcome::Requeued(_) => "requeued",
            Outcome::Deferred => "deferred",
        }
    }
}

/// The span of one delivery's handling.
fn handle_span(worker: &str, envelope: &Envelope) -> tracing::Span {
    info_span!(
        "handle",
        worker,
        case_id = %envelope.subject,
        event_id = %envelope.id,
        event_type = %envelope.event_type,
        correlation_id = %envelope.correlationid,
    )
}

impl Runtime {
    /// A runtime over `store` and `bus`.
    pub fn new(store: Store, bus: Arc<dyn Bus>, config: RuntimeConfig) -> Runtime {
        Runtime {
            store,
            bus,
            config,
            metrics: Default::default(),
            declared: Default::default(),
            relay_wakeup: Default::default(),
            commits: Default::default(),
            early: Default::default(),
            spans: None,
            effect_wakeups: Arc::new(std::array::from_fn(|_| Notify::new())),
            publishing: Default::default(),
        }
    }

    /// [`publishes`] of `handler`'s worker, worked out on its first delivery.
    fn publishing(&self, handler: &dyn Handler) -> Publishes {
        let mut known = self.publishing.lock().expect("publishing lock");
        let worker = handler.worker();
        if let Some((_, p)) = known.iter().find(|(w, _)| *w == worker) {
            return p.clone();
        }
        let p: Publishes = publishes(handler).into();
        known.push((worker, p.clone()));
        p
    }

    /// Hands every finished hop and effect span to `sink`.
    pub fn with_spans(mut self, sink: Arc<dyn telemetry::SpanSink>) -> Runtime {
        self.spans = Some(sink);
        self
    }

    /// Records the span of `worker` handling `envelope` (when spans are wanted).
    fn hop_span(&self, worker: &str, envelope: &Envelope, start: SystemTime, outcome: &Outcome) {
        let Some(sink) = &self.spans else { return };
        let error = match outcome {
            Outcome::DeadLettered(why) => Some(why.clone()),
            _ => None,
        };
        sink.finished(telemetry::FinishedSpan {
            trace: TraceId::of_case(envelope.subject.as_str()),
            span: SpanId::hop(worker, envelope.id.as_str()),
            parent: envelope.trace_context().map(|(_, parent)| parent),
            name: format!("{worker} {}", envelope.routing_key()),
            kind: telemetry::SpanKind::Consumer,
            start,
            end: SystemTime::now(),
            attributes: vec![
                ("messaging.system", "rabbitmq".into()),
                ("messaging.operation", "process".into()),
                ("messaging.message.id", envelope.id.to_string()),
                ("wangban.worker", worker.into()),
                ("wangban.event_type", envelope.event_type.clone()),
                ("wangban.case_id", envelope.subject.to_string()),
                ("wangban.outcome", outcome.label().into()),
            ],
            error,
        });
    }

    fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.config.retry_min)
            .with_max_delay(self.config.retry_max)
            .with_max_times(self.config.retry_times)
            .with_jitter()
    }

    /// Consumes `handler`'s queue until `shutdown` turns true; resubscribes with backoff when the
    /// broker goes away. In-flight work finishes before it returns.
    pub async fn run_worker(&self, handler: Arc<dyn Handler>, mut shutdown: watch::Receiver<bool>) {
        let worker = handler.worker();
        let mut pause = self.config.retry_min;
        while !*shutdown.borrow() {
            let mut sub = match self.bus.subscribe(worker, self.config.prefetch).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(worker, error = %e, "cannot subscribe; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = shutdown.changed() => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            tracing::info!(worker, "consuming");
            pause = self.config.retry_min;
            // At most `concurrency` transactions run at once. Deliveries that arrive while they
            // are all busy wait in `ready` and go together into the next free one, up to
            // `batch` of them (one commit, one WAL flush, for all); a lone delivery starts at
            // once. A delivery that fails in a batch, or waits to be retried, is handled alone
            // and holds no slot while it waits, so events that arrived early (an answer before
            // its request's record) cannot starve the one they wait for. The prefetch bounds
            // the deliveries in hand.
            let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
            let mut in_flight = tokio::task::JoinSet::new();
            let mut ready = std::collections::VecDeque::new();
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    next = sub.next() => match next {
                        Some(Ok(delivery)) => ready.push_back(delivery),
                        Some(Err(e)) => {
                            tracing::warn!(worker, error = %e, "subscription failed; resubscribing");
                            break;
                        }
                        None => {
                            tracing::warn!(worker, "subscription ended; resubscribing");
                            break;
                        }
                    },
                    Ok(slot) = slots.clone().acquire_owned(), if !ready.is_empty() => {
                        let batch = if handler.batches() { self.config.batch } else { 1 };
                        let take = ready.len().min(batch.max(1));
                        let batch: Vec<Delivery> = ready.drain(..take).collect();
                        let (runtime, handler, slots) =
                            (self.clone(), handler.clone(), slots.clone());
                        in_flight.spawn(async move {
                            runtime.process_batch(handler, batch, slot, slots).await
                        });
                    }
                    Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
                }
                // Finished batches are reaped at once, not only when nothing else is ready.
                while in_flight.try_join_next().is_some() {}
            }
            // Deliveries not yet started go back to the broker (for another consumer, or for
            // this one once it has subscribed again).
            for delivery in ready {
                let _ = delivery.requeue().await;
            }
            if *shutdown.borrow() {
                // In-flight work finishes (and is acked or given back) before we stop.
                while in_flight.join_next().await.is_some() {}
            } else {
                // The subscription is gone and its unacked deliveries with it (the broker
                // redelivers them; inboxes absorb a second handling): let the work in flight
                // finish on its own and subscribe again at once.
                tokio::spawn(async move { while in_flight.join_next().await.is_some() {} });
            }
        }
        tracing::info!(worker, "stopped");
    }

    /// Runs `handler`'s timer every [`RuntimeConfig::tick`] until shutdown.
    pub async fn run_ticks(&self, handler: Arc<dyn Handler>, mut shutdown: watch::Receiver<bool>) {
        let mut interval = tokio::time::interval(self.config.tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !*shutdown.borrow() {
            tokio::select! {
                _ = interval.tick() => {
                    if let Err(e) = handler.tick(self).await {
                        tracing::warn!(worker = handler.worker(), error = %e, "timer failed; next tick retries");
                    }
                    self.metrics.ticked(handler.worker());
                }
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Handles one delivery to the end: acked, dead-lettered or requeued.
    pub async fn process(&self, handler: &dyn Handler, delivery: Delivery) -> Outcome {
        self.process_with(handler, delivery, None, false).await
    }

    /// Handles `batch` as the consumer loop does deliveries that arrived while its transactions
    /// were busy: together, in one transaction where they can be; for tests that step a worker.
    pub async fn process_together(&self, handler: Arc<dyn Handler>, batch: Vec<Delivery>) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        self.clone()
            .process_batch(handler, batch, slot, slots)
            .await;
    }

    /// [`Runtime::process`], each attempt taking one of `slots` while it runs. `early`: the
    /// delivery was found early in a batch just now, so its first attempt waits for the next
    /// commit on its case.
    async fn process_with(
        &self,
        handler: &dyn Handler,
        delivery: Delivery,
        slots: Option<&Semaphore>,
        early: bool,
    ) -> Outcome {
        let (started, wall) = (std::time::Instant::now(), SystemTime::now());
        let worker = handler.worker();
        // Decoded once: the handling, the metrics and the hop's span share it.
        let envelope = match Envelope::decode(&delivery.payload, self.config.max_message_bytes) {
            Ok(e) => e,
            Err(e) => {
                let reason = format!("refused: {e}");
                tracing::warn!(worker, routing_key = %delivery.routing_key, %reason, "dead-lettering an undecodable message");
                let outcome = self.dead_letter(worker, delivery, None, reason).await;
                self.metrics
                    .consumed(worker, "undecodable", outcome.label(), started.elapsed());
                return outcome;
            }
        };
        let outcome = self
            .process_decoded(handler, delivery, &envelope, slots, early)
            .await;
        self.finished(worker, &envelope, (started, wall), &outcome);
        outcome
    }

    /// Counts a delivery that ended with `outcome` and finishes its hop's span.
    fn finished(
        &self,
        worker: &str,
        envelope: &Envelope,
        (started, wall): (std::time::Instant, SystemTime),
        outcome: &Outcome,
    ) {
        if *outcome != Outcome::Deferred {
            self.early.forget(envelope.id.as_str());
        }
        self.metrics.consumed(
            worker,
            &envelope.event_type,
            outcome.label(),
            started.elapsed(),
        );
        self.hop_span(worker, envelope, wall, outcome);
    }

    async fn process_decoded(
        &self,
        handler: &dyn Handler,
        delivery: Delivery,
        envelope: &Envelope,
        slots: Option<&Semaphore>,
        early: bool,
    ) -> Outcome {
        let worker = handler.worker();
        async {
            let attempt = || async {
                let _slot = match slots {
                    Some(s) => Some(s.acquire().await.map_err(|_| {
                        HandlerError::Transient("the worker is stopping".into())
                    })?),
                    None => None,
                };
                self.attempt(handler, envelope).await
            };
            let mut attempts = 0_i64;
            let mut note = |e: &HandlerError, after: Duration| {
                attempts += 1;
                tracing::info!(error = %e, retry_in_ms = after.as_millis() as u64, "transient failure; retrying");
                self.metrics.retried(worker, &envelope.event_type);
                self.note_retry(worker, envelope, attempts, e);
            };
            // An early event gets a few tries only, each after the next commit on its case in
            // this process (what it follows is usually that commit, a moment behind it) or the
            // retry delay, whichever comes first: what it follows may be queued behind it (then
            // holding the delivery would keep it out of reach of the prefetch), committed by
            // another process, or wait for a crashed executor's lease. One found early in a batch
            // has had its first try.
            let watch = self.commits.watch(envelope.subject.as_str());
            let mut early_tries = 0;
            if early {
                early_tries = 1;
                self.metrics.retried(worker, &envelope.event_type);
                let _ = tokio::time::timeout(self.config.retry_min, watch.next()).await;
            }
            let result = loop {
                let next_commit = watch.next();
                let result = (&attempt)
                    .retry(self.backoff())
                    .when(|e: &HandlerError| e.is_transient() && !e.is_early())
                    .notify(&mut note)
                    .await;
                match result {
                    Err(e) if e.is_early() && early_tries < EARLY_TRIES => {
                        early_tries += 1;
                        let pause = self.config.retry_min * (1 << (early_tries - 1));
                        tracing::debug!(error = %e, "early; waiting for the next commit on its case");
                        self.metrics.retried(worker, &envelope.event_type);
                        let _ = tokio::time::timeout(pause, next_commit).await;
                    }
                    other => break other,
                }
            };
            drop(watch);
            if let Err(e) = &result
                && e.is_early()
            {
                let waited = self
                    .early
                    .waited(envelope.id.as_str(), self.store.clock().now_ms());
                if waited < self.config.early_wait.as_millis() as i64 {
                    // The early tries that a commit soon ended stay off the timeline; one that
                    // is put back is on it.
                    self.note_retry(worker, envelope, i64::from(early_tries), e);
                    return self.defer(worker, delivery, &e.to_string()).await;
                }
            }
            match result {
                Ok(true) => self.settle(delivery, Outcome::Handled).await,
                Ok(false) => self.settle(delivery, Outcome::Duplicate).await,
                Err(e) => {
                    let reason = e.to_string();
                    tracing::warn!(%reason, "dead-lettering");
                    self.dead_letter(worker, delivery, Some(envelope), reason).await
                }
            }
        }
        .instrument(handle_span(worker, envelope))
        .await
    }

    /// Keeps a retried attempt on the case's timeline; best effort, off the handling path.
    fn note_retry(
        &self,
        worker: &'static str,
        envelope: &Envelope,
        attempts: i64,
        e: &HandlerError,
    ) {
        let (store, env, error) = (self.store.clone(), envelope.clone(), e.to_string());
        tokio::spawn(async move {
            let _ = store
                .record_retry(
                    env.subject.as_str(),
                    worker,
                    env.id.as_str(),
                    &env.event_type,
                    attempts,
                    &error,
                )
                .await;
        });
    }

    /// Handles `batch` in one transaction, a savepoint per delivery, while holding `slot`; acks
    /// what it handled after the commit. A delivery that fails is rolled back to its savepoint
    /// and then handled alone ([`Runtime::process_with`], with retries); when the batch itself
    /// cannot commit, every delivery is. Cases are handled in the order of their ids (the order
    /// of one case's events kept), so two batches lock the cases they share in the same order.
    async fn process_batch(
        self,
        handler: Arc<dyn Handler>,
        batch: Vec<Delivery>,
        slot: tokio::sync::OwnedSemaphorePermit,
        slots: Arc<Semaphore>,
    ) {
        // Deliveries to handle alone, and whether the batch found them early.
        let mut alone: Vec<(Delivery, bool)> = Vec::new();
        if batch.len() == 1 {
            drop(slot);
            alone = batch.into_iter().map(|d| (d, false)).collect();
        } else {
            let (started, wall) = (std::time::Instant::now(), SystemTime::now());
            let worker = handler.worker();
            let mut decoded = Vec::with_capacity(batch.len());
            for delivery in batch {
                match Envelope::decode(&delivery.payload, self.config.max_message_bytes) {
                    Ok(envelope) => decoded.push((envelope, delivery)),
                    Err(_) => alone.push((delivery, false)), // dead-lettered there, with its reason
                }
            }
            decoded.sort_by(|a, b| a.0.subject.as_str().cmp(b.0.subject.as_str()));
            let envelopes: Vec<&Envelope> = decoded.iter().map(|(e, _)| e).collect();
            let results = self.attempt_batch(handler.as_ref(), &envelopes).await;
            drop(slot);
            match results {
                Ok(results) => {
                    for ((envelope, delivery), result) in decoded.into_iter().zip(results) {
                        let outcome = match result {
                            Ok(true) => Outcome::Handled,
                            Ok(false) => Outcome::Duplicate,
                            Err(e) => {
                                tracing::debug!(worker, event_id = %envelope.id, error = %e, "failed in a batch; handling it alone");
                                alone.push((delivery, e.is_early()));
                                continue;
                            }
                        };
                        let outcome = self.settle(delivery, outcome).await;
                        self.finished(worker, &envelope, (started, wall), &outcome);
                    }
                }
                Err(e) => {
                    tracing::info!(worker, error = %e, "a batch failed; handling its deliveries alone");
                    alone.extend(decoded.into_iter().map(|(_, d)| (d, false)));
                }
            }
        }
        let mut one_by_one = tokio::task::JoinSet::new();
        for (delivery, early) in alone {
            let (runtime, handler, slots) = (self.clone(), handler.clone(), slots.clone());
            one_by_one.spawn(async move {
                runtime
                    .process_with(handler.as_ref(), delivery, Some(&slots), early)
                    .await
            });
        }
        while one_by_one.join_next().await.is_some() {}
    }

    /// One transaction over several events: per event `Ok(true)` handled, `Ok(false)` already in
    /// the inbox, `Err` failed (and rolled back to its savepoint). `Err` overall: nothing
    /// committed.
    async fn attempt_batch(
        &self,
        handler: &dyn Handler,
        envelopes: &[&Envelope],
    ) -> Result<Vec<Result<bool, HandlerError>>, HandlerError> {
        let worker = handler.worker();
        // What each decision needs from outside, read before the transaction begins.
        let mut gathered = Vec::with_capacity(envelopes.len());
        for envelope in envelopes {
            gathered.push(handler.gather(envelope).await);
        }
        let mut tx = self.store.begin().await?;
        let mut results = Vec::with_capacity(envelopes.len());
        let mut parties = Vec::new();
        // The deliveries of the current case found early: tried again after each later one of
        // the case that is handled (it may be what they follow), in the same transaction.
        let mut early: Vec<usize> = Vec::new();
        let mut kept: Vec<Option<Gathered>> = Vec::with_capacity(envelopes.len());
        // What a delivery handled in the batch leaves for after the commit.
        let mut emitted = false;
        fn took(handled: Option<Handled>, parties: &mut Vec<Party>, emitted: &mut bool) -> bool {
            let Some(h) = handled else { return false };
            parties.extend(h.parties);
            *emitted |= h.emitted;
            true
        }
        for (i, (envelope, gathered)) in envelopes.iter().zip(gathered).enumerate() {
            if i > 0 && envelopes[i - 1].subject != envelope.subject {
                early.clear();
            }
            let gathered = match gathered {
                Ok(g) => g,
                Err(e) => {
                    results.push(Err(e)); // handled alone, with retries
                    kept.push(None);
                    continue;
                }
            };
            kept.push(gathered.clone());
            let one = self
                .attempt_in_batch(&mut tx, handler, envelope, gathered)
                .await?;
            let handled = matches!(one, Ok(Some(_)));
            if matches!(&one, Err(e) if e.is_early()) {
                early.push(i);
            }
            results.push(one.map(|h| took(h, &mut parties, &mut emitted)));
            // What it follows may have just been handled: the case's early ones again, until
            // none of them goes through.
            let mut progress = handled;
            while progress && !early.is_empty() {
                progress = false;
                for j in std::mem::take(&mut early) {
                    let again = self
                        .attempt_in_batch(&mut tx, handler, envelopes[j], kept[j].clone())
                        .await?;
                    match again {
                        Err(e) if e.is_early() => {
                            early.push(j);
                            results[j] = Err(e);
                        }
                        other => {
                            progress |= matches!(other, Ok(Some(_)));
                            results[j] = other.map(|h| took(h, &mut parties, &mut emitted));
                        }
                    }
                }
            }
        }
        tx.commit().await?;
        for (envelope, result) in envelopes.iter().zip(&results) {
            if matches!(result, Ok(true)) {
                self.commits.committed(envelope.subject.as_str());
            }
        }
        let committed = results.iter().filter(|r| matches!(r, Ok(true))).count();
        if committed > 0 {
            self.metrics.committed(worker, committed as u64);
        }
        if emitted {
            self.relay_wakeup.committed();
        }
        self.wake_executors(parties);
        Ok(results)
    }

    /// One delivery of a batch in `tx`, under a savepoint: kept when it is handled, undone to the
    /// savepoint when it fails. `Err` overall: the transaction itself failed.
    async fn attempt_in_batch(
        &self,
        tx: &mut wangban_store::CaseTx,
        handler: &dyn Handler,
        envelope: &Envelope,
        gathered: Option<Gathered>,
    ) -> Result<Result<Option<Handled>, HandlerError>, HandlerError> {
        tx.savepoint().await?;
        let one = self
            .handle_in(tx, handler, envelope, gathered)
            .instrument(handle_span(handler.worker(), envelope))
            .await;
        match &one {
            Ok(_) => tx.release_savepoint().await?,
            Err(_) => tx.rollback_to_savepoint().await?,
        }
        Ok(one)
    }

    /// One attempt in one transaction. `Ok(false)`: the inbox had already seen the event.
    async fn attempt(
        &self,
        handler: &dyn Handler,
        envelope: &Envelope,
    ) -> Result<bool, HandlerError> {
        let gathered = handler.gather(envelope).await?;
        let mut tx = self.store.begin().await?;
        let Some(handled) = self.handle_in(&mut tx, handler, envelope, gathered).await? else {
            return Ok(false);
        };
        tx.commit().await?;
        self.commits.committed(envelope.subject.as_str());
        self.metrics.committed(handler.worker(), 1);
        if handled.emitted {
            self.relay_wakeup.committed();
        }
        self.wake_executors(handled.parties);
        Ok(true)
    }

    /// Handles one event in `tx`: claims it in the inbox, runs the handler, queues its events.
    /// `None`: the inbox had already seen it.
    async fn handle_in(
        &self,
        tx: &mut wangban_store::CaseTx,
        handler: &dyn Handler,
        envelope: &Envelope,
        gathered: Option<Gathered>,
    ) -> Result<Option<Handled>, HandlerError> {
        let worker = handler.worker();
        if !tx.inbox_claim(worker, envelope.id.as_str()).await? {
            tracing::debug!("already handled; acking the redelivery");
            return Ok(None);
        }
        let publishes = self.publishing(handler);
        let mut cx = Cx::new(tx, worker, envelope, &publishes, gathered);
        handler.handle(&mut cx, envelope).await?;
        let (mut outgoing, requested) = cx.into_parts();
        let hop = SpanId::hop(worker, envelope.id.as_str());
        for event in &mut outgoing {
            may_publish(worker, &publishes, event)?;
            event.emitted_by(hop);
            tx.enqueue(event, worker).await?;
        }
        // The delivery's writes go now, so that a conflict they meet is this delivery's.
        tx.flush().await?;
        tracing::info!(emitted = outgoing.len(), "handled");
        Ok(Some(Handled {
            parties: requested,
            emitted: !outgoing.is_empty(),
        }))
    }

    fn wake_executors(&self, parties: impl IntoIterator<Item = Party>) {
        let mut woken = Vec::new();
        for party in parties {
            if !woken.contains(&party) {
                self.wake_executor(party);
                woken.push(party);
            }
        }
    }

    /// Puts an early event back at the tail of its worker's queue (confirmed), then acks this
    /// delivery: what it follows, queued behind it, is handled first. After a short pause, so a
    /// queue of nothing but early events does not spin. If the copy cannot be published, the
    /// delivery is given back instead.
    async fn defer(&self, worker: &str, delivery: Delivery, why: &str) -> Outcome {
        tokio::time::sleep(self.config.retry_max.min(Duration::from_millis(250))).await;
        match self.bus.send_to_queue(worker, &delivery.payload).await {
            Ok(()) => {
                tracing::info!(reason = why, "early; put back behind what it follows");
                self.settle(delivery, Outcome::Deferred).await
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot defer an early event; giving it back");
                let _ = delivery.requeue().await;
                Outcome::Requeued(why.to_owned())
            }
        }
    }

    async fn settle(&self, delivery: Delivery, outcome: Outcome) -> Outcome {
        if let Err(e) = delivery.ack().await {
            // The broker will redeliver; the inbox makes the second handling a no-op.
            tracing::warn!(error = %e, "ack failed; the message will be redelivered");
        }
        outcome
    }

    async fn dead_letter(
        &self,
        worker: &str,
        delivery: Delivery,
        envelope: Option<&Envelope>,
        reason: String,
    ) -> Outcome {
        let event_id = envelope.map(|e| e.id.to_string());
        let event_type = envelope.map(|e| e.event_type.clone());
        let case_id = envelope.map(|e| e.subject.to_string());
        let record = || async {
            self.store
                .record_dead_letter(
                    worker,
                    event_id.as_deref(),
                    event_type.as_deref(),
                    case_id.as_deref(),
                    &reason,
                    &delivery.payload,
                )
                .await
        };
        if let Err(e) = record
            .retry(self.backoff())
            .when(|e| e.is_transient())
            .await
        {
            tracing::error!(error = %e, "cannot record the dead letter; requeueing the message");
            let _ = delivery.requeue().await;
            return Outcome::Requeued(reason);
        }
        let note = DeadLetterNote {
            reason: &reason,
            event_type: event_type.as_deref(),
            event_id: event_id.as_deref(),
        };
        if let Err(e) = self.bus.dead_letter(worker, &delivery.payload, note).await {
            // The store holds it already; the queue copy is for broker-side tooling.
            tracing::warn!(error = %e, "dead letter recorded in the store but not in the dead-letter queue");
        }
        self.settle(delivery, Outcome::DeadLettered(reason.clone()))
            .await;
        Outcome::DeadLettered(reason)
    }
}
