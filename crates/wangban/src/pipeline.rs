//! The pipeline: one store, one bus, the five workers with their parties (simulated for now),
//! the outbox relay and the timers. Any subset of workers can run in a process; every worker's
//! queue is declared whatever runs here, so events for a worker running elsewhere wait for it.

use crate::executors;
use crate::parties::Parties;
use crate::settings::Settings;
use anyhow::Context;
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::task::JoinSet;
use wangban_bus::amqp::AmqpBus;
use wangban_bus::memory::MemoryBus;
use wangban_bus::{Bus, Topology};
use wangban_domain::effects::Party;
use wangban_domain::events::EventType;
use wangban_domain::ids::CaseId;
use wangban_providers::simulated::Simulation;
use wangban_runtime::ingress::{self, BusIngress};
use wangban_runtime::{Handler, Runtime, worker_queue};
use wangban_store::Store;

/// The workers, in pipeline order.
pub const WORKERS: [&str; 5] = ["intake", "review", "notify", "production", "courier"];

/// A connected pipeline.
#[derive(Clone)]
pub struct Pipeline {
    pub runtime: Runtime,
    pub simulation: Simulation,
    pub topology: Topology,
    handlers: Vec<Arc<dyn Handler>>,
    parties: Arc<Parties>,
    staffed_desk: bool,
    portal_retry: std::time::Duration,
    /// Whose outbox rows this process relays ([`Settings::relay`]).
    relay: Option<Vec<&'static str>>,
    /// Declare only what this process's own broker user may ([`Settings::declare_own`]).
    declare_own: bool,
}

/// Running workers; stop them gracefully with [`Running::stop`] or kill them with [`Running::abort`].
pub struct Running {
    shutdown: watch::Sender<bool>,
    /// Consumers, timers and executors.
    tasks: JoinSet<()>,
    /// The outbox relay: stopped last, so what the others commit while they finish is published.
    relay_shutdown: watch::Sender<bool>,
    relay: JoinSet<()>,
}

impl Running {
    /// Stops taking deliveries, lets in-flight ones (and parties' calls) finish, then flushes the
    /// outbox, and waits.
    pub async fn stop(self) {
        self.stop_within(std::time::Duration::MAX).await;
    }

    /// [`Running::stop`], but gives up after `deadline`: what is still in flight is abandoned
    /// unacknowledged, and the broker redelivers it. True when everything finished in time.
    pub async fn stop_within(mut self, deadline: std::time::Duration) -> bool {
        let _ = self.shutdown.send(true);
        let relay_shutdown = self.relay_shutdown;
        let (tasks, relay) = (&mut self.tasks, &mut self.relay);
        let all = async {
            while tasks.join_next().await.is_some() {}
            let _ = relay_shutdown.send(true);
            while relay.join_next().await.is_some() {}
        };
        let in_time = match tokio::time::Instant::now().checked_add(deadline) {
            Some(at) => tokio::time::timeout_at(at, all).await.is_ok(),
            None => {
                all.await;
                true
            }
        };
        if !in_time {
            self.tasks.abort_all();
            self.relay.abort_all();
            while self.tasks.join_next().await.is_some() {}
            while self.relay.join_next().await.is_some() {}
        }
        in_time
    }

    /// Stops at once, as a crash would: in-flight deliveries go back to their queues.
    pub async fn abort(mut self) {
        self.tasks.abort_all();
        self.relay.abort_all();
        while self.tasks.join_next().await.is_some() {}
        while self.relay.join_next().await.is_some() {}
    }
}

/// Builds the topology of all five workers.
pub fn topology(handlers: &[Arc<dyn Handler>], prefix: &str, delivery_limit: u32) -> Topology {
    let keys = |kinds: &mut dyn Iterator<Item = EventType>| {
        let mut keys: Vec<String> = kinds.map(EventType::routing_key).collect();
        keys.sort();
        keys.dedup();
        keys
    };
    Topology {
        prefix: prefix.to_owned(),
        workers: handlers.iter().map(|h| worker_queue(h.as_ref())).collect(),
        delivery_limit,
        http_publishes: keys(&mut Party::ALL.iter().map(|p| p.reports())),
        portal_publishes: keys(
            &mut [
                EventType::ApplicationSubmitted,
                EventType::ApplicationResubmitted,
            ]
            .into_iter(),
        ),
    }
}

/// The topology of the five workers, built without connecting anything (for `wangban topology`
/// and the invariant checker).
pub fn offline_topology(settings: &Settings) -> Topology {
    topology(
        &handlers(settings),
        &settings.queue_prefix,
        settings.delivery_limit,
    )
}

/// The queue and bindings of each worker (see [`offline_topology`]).
pub fn worker_queues(settings: &Settings) -> Vec<wangban_bus::WorkerQueue> {
    offline_topology(settings).workers
}

/// The five handlers: decisions only; the parties' executors act on them.
pub fn handlers(settings: &Settings) -> Vec<Arc<dyn Handler>> {
    vec![
        Arc::new(wangban_intake::Intake {
            materials: settings.materials.as_ref().map(|m| m.0.clone()),
            rules: settings.rules.clone(),
            refuse_unknown_fields: settings.refuse_unknown_fields,
        }),
        Arc::new(wangban_review::Review {
            desk: match settings.desk {
                Some(_) => wangban_review::Desk::Staffed,
                None => wangban_review::Desk::Party,
            },
            rules: settings.review_rules(),
            reviewers_file: settings
                .reviewers_file
                .clone()
                .map(wangban_review::desk_file::Watched::new),
            caught_up: Default::default(),
        }),
        Arc::new(wangban_notify::Notify::new(settings.fees.clone())),
        Arc::new(wangban_production::Production {
            calendar: settings.calendar.clone(),
            promise_working_days: settings.production_working_days,
        }),
        Arc::new(wangban_courier::Dispatch),
    ]
}

impl Pipeline {
    /// Connects the store (migrating it) and the bus (declaring the topology).
    pub async fn connect(settings: &Settings) -> anyhow::Result<Pipeline> {
        let pipeline = Pipeline::open(settings).await?;
        pipeline.declare().await?;
        Ok(pipeline)
    }

    /// [`Pipeline::connect`] as the portal side does it (`wangban submit`, the demo): a broker
    /// that refuses the connection is tried again with backoff for up to
    /// `WANGBAN_PORTAL_RETRY_SECS` before this gives up.
    pub async fn connect_as_portal(settings: &Settings) -> anyhow::Result<Pipeline> {
        let pipeline = Pipeline::open(settings).await?;
        // The portal's own broker user (`WANGBAN_DECLARE=own`) declares only the exchanges.
        let topology = if pipeline.declare_own {
            pipeline.topology.only(&[])
        } else {
            pipeline.topology.clone()
        };
        pipeline
            .patiently("declaring the bus topology", || async {
                pipeline.runtime.bus.declare(&topology).await
            })
            .await?;
        pipeline
            .runtime
            .declared
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(pipeline)
    }

    /// Runs `attempt` until it succeeds, retrying what may pass (the broker is away, restarting,
    /// or refused a message) with jittered exponential backoff for up to `portal_retry`; a
    /// refusal that needs an operator (credentials, permissions, a queue declared otherwise)
    /// ends it at once.
    async fn patiently<F, Fut>(&self, what: &str, attempt: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), wangban_bus::BusError>>,
    {
        use backon::Retryable;
        let started = std::time::Instant::now();
        let backoff = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(100))
            .with_max_delay(std::time::Duration::from_secs(5))
            .with_total_delay(Some(self.portal_retry))
            .without_max_times()
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|e| !needs_operator(e))
            .notify(|e, after| {
                tracing::warn!(
                    error = %e,
                    retry_in_ms = after.as_millis() as u64,
                    "{what}: the broker is away; trying again"
                );
            })
            .await
            .map_err(|e| {
                if needs_operator(&e) {
                    anyhow::anyhow!("{what}: {e}")
                } else {
                    anyhow::anyhow!(
                        "{what}: {e} (gave up after {:.0} s; WANGBAN_PORTAL_RETRY_SECS={})",
                        started.elapsed().as_secs_f64(),
                        self.portal_retry.as_secs()
                    )
                }
            })
    }

    /// Declares the bus topology (idempotent) and marks the pipeline ready.
    pub async fn declare(&self) -> anyhow::Result<()> {
        self.declare_topology(&self.topology).await
    }

    /// Declares the exchanges and only the queues of `workers` (for per-worker broker users).
    pub async fn declare_only(&self, workers: &[&str]) -> anyhow::Result<()> {
        self.declare_topology(&self.topology.only(workers)).await
    }

    async fn declare_topology(&self, topology: &Topology) -> anyhow::Result<()> {
        self.runtime
            .bus
            .declare(topology)
            .await
            .context("declaring the bus topology")?;
        self.runtime
            .declared
            .store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Connects the store (migrating it) and makes the bus, without contacting the broker yet.
    pub async fn open(settings: &Settings) -> anyhow::Result<Pipeline> {
        let store = Store::connect_with(
            &settings.database_url,
            settings.fingerprint_key.expose(),
            settings.db_pool_size,
        )
        .await
        .context("connecting to the database")?
        .with_clock(settings.clock.clone());
        if let Some(desk) = &settings.desk {
            desk.load(&store)
                .await
                .context("loading the reviewers file into the store")?;
        }
        // The handlers (and so the topology) need the parties, whose answers need the bus, which
        // needs the topology: the parties' ingress is bound to the bus once it exists.
        let late = Arc::new(LateIngress::default());
        let simulation = Simulation::new(late.clone(), settings.sim_delay)
            .with_faults(settings.sim_faults.clone())
            .with_retention(settings.sim_ledger_retention)
            .with_clock(settings.clock.clone());
        let mut parties = Parties::build(settings, &simulation)?;
        parties.hall = Arc::new(crate::parties::HallDesk {
            store: store.clone(),
            unstaffed: parties.hall.clone(),
        });
        let parties = Arc::new(parties);
        let handlers = handlers(settings);
        let topology = topology(&handlers, &settings.queue_prefix, settings.delivery_limit);
        let bus: Arc<dyn Bus> = match settings.amqp_connect_url()? {
            Some(url) => {
                let mut bus = AmqpBus::new(&url, topology.clone());
                if let Some(pem) = settings.amqp_ca_pem()? {
                    bus = bus.with_ca_pem(pem);
                }
                Arc::new(bus)
            }
            None => Arc::new(MemoryBus::new()),
        };
        let mut runtime = Runtime::new(store, bus, settings.runtime.clone());
        if let Some(otlp) = &settings.otlp {
            runtime = runtime.with_spans(Arc::new(crate::otlp::OtlpExporter::start(otlp.clone())));
        }
        let _ = late.0.set(BusIngress {
            runtime: runtime.clone(),
            source: "/wangban/simulated".into(),
        });
        Ok(Pipeline {
            runtime,
            simulation,
            topology,
            handlers,
            parties,
            staffed_desk: settings.desk.is_some(),
            portal_retry: settings.portal_retry,
            relay: settings.relay.clone(),
            declare_own: settings.declare_own,
        })
    }

    /// Starts the named workers (their consumers, timers and parties' executors) and the outbox
    /// relay.
    pub fn spawn(&self, workers: &[&str]) -> anyhow::Result<Running> {
        for w in workers {
            anyhow::ensure!(
                WORKERS.contains(w),
                "unknown worker `{w}` (known: {})",
                WORKERS.join(", ")
            );
        }
        let (shutdown, rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for h in self
            .handlers
            .iter()
            .filter(|h| workers.contains(&h.worker()))
        {
            let (rt, h2, rx2) = (self.runtime.clone(), h.clone(), rx.clone());
            tasks.spawn(async move { rt.run_worker(h2, rx2).await });
            let (rt, h2, rx2) = (self.runtime.clone(), h.clone(), rx.clone());
            tasks.spawn(async move { rt.run_ticks(h2, rx2).await });
            let parties = executors::parties_of(h.worker(), self.staffed_desk);
            for ex in executors::executors(&self.parties, parties) {
                let (rt, rx2) = (self.runtime.clone(), rx.clone());
                tasks.spawn(async move { rt.run_executor(ex, rx2).await });
            }
        }
        let (relay_shutdown, relay_rx) = watch::channel(false);
        let mut relay = JoinSet::new();
        let (rt, producers) = (self.runtime.clone(), self.relay.clone());
        relay.spawn(async move { rt.run_relay(producers, relay_rx).await });
        Ok(Running {
            shutdown,
            tasks,
            relay_shutdown,
            relay,
        })
    }

    /// The handler of a worker (to step it one delivery at a time in tests).
    pub fn handler(&self, worker: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.iter().find(|h| h.worker() == worker).cloned()
    }

    /// Hands an application to intake, as the portal does: `application.submitted`, or
    /// `application.resubmitted` for a corrected one. Returns its case id.
    pub async fn submit(&self, application: &Value, resubmission: bool) -> anyhow::Result<CaseId> {
        let id = application
            .get("application_id")
            .and_then(Value::as_str)
            .context("the application has no application_id")?;
        let app_id = wangban_domain::ids::ApplicationId::parse(id)
            .map_err(|e| anyhow::anyhow!("application_id: {e}"))?;
        let case = CaseId::for_application(&app_id);
        let kind = if resubmission {
            EventType::ApplicationResubmitted
        } else {
            EventType::ApplicationSubmitted
        };
        // The same event (the same id) on every try: if a confirm was lost with the connection,
        // intake's inbox drops the copy.
        let event = ingress::event(
            self.runtime.store.clock(),
            kind,
            "/portal",
            &case,
            None,
            application.clone(),
        );
        self.patiently("handing the application to intake", || async {
            ingress::publish(self.runtime.bus.as_ref(), &event).await
        })
        .await?;
        self.runtime
            .metrics
            .published("ingress", &event.routing_key(), 1);
        Ok(case)
    }

    /// Whether the pipeline is quiet now: every requested effect is carried out (or dead), the
    /// outbox is relayed and every worker queue is empty (so every committed event has been
    /// handled or is in flight).
    pub async fn is_quiet(&self) -> bool {
        let rt = &self.runtime;
        if rt.store.effect_backlog().await.map_or(true, |n| n > 0) {
            return false;
        }
        if rt.store.outbox_backlog().await.map_or(true, |n| n > 0) {
            return false;
        }
        // A deadline that has come due is about to be fired.
        let now = rt.store.clock().now_ms();
        if rt
            .store
            .scheduled_backlog()
            .await
            .map_or(true, |(_, due)| due.is_some_and(|at| at <= now))
        {
            return false;
        }
        for w in &self.topology.workers {
            if !rt.bus.stats(&w.worker).await.is_ok_and(|s| s.ready == 0) {
                return false;
            }
        }
        true
    }

    /// Publishes raw bytes as if the portal had sent them (for refusal tests and the demo).
    pub async fn submit_raw(&self, routing_key: &str, payload: Vec<u8>) -> anyhow::Result<()> {
        let out = wangban_bus::Outgoing {
            routing_key: routing_key.into(),
            message_id: String::new(),
            payload,
            traceparent: None,
        };
        self.runtime
            .bus
            .publish(&[out])
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Whether a broker error needs an operator rather than patience: wrong credentials, a missing
/// vhost or permission, a queue declared with other arguments.
fn needs_operator(e: &wangban_bus::BusError) -> bool {
    match e {
        wangban_bus::BusError::Config(_) => true,
        wangban_bus::BusError::Unavailable(m) => {
            m.contains("ACCESS_REFUSED") || m.contains("NOT_ALLOWED")
        }
        wangban_bus::BusError::Nacked(_) => false,
    }
}

/// The simulated parties' ingress, bound to the bus after it is made.
#[derive(Default)]
struct LateIngress(std::sync::OnceLock<BusIngress>);

#[async_trait::async_trait]
impl wangban_providers::Ingress for LateIngress {
    async fn report(&self, kind: EventType, case: &CaseId, data: Value) -> Result<(), String> {
        match self.0.get() {
            Some(ingress) => ingress.report(kind, case, data).await,
            None => Err("the bus is not connected yet".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wangban_bus::topic_matches;

    /// Every event a worker consumes has a publisher allowed to publish it (a worker, the HTTP
    /// surface or the portal), and every transition has exactly one: the topic permissions
    /// rendered from this topology let the pipeline run and let no two workers take one step.
    #[test]
    fn every_consumed_event_has_exactly_the_publishers_it_needs() {
        let settings = Settings::from_env("sqlite::memory:").unwrap();
        let t = offline_topology(&settings);
        let publishers = |key: &str| -> Vec<String> {
            let mut who: Vec<String> = t
                .workers
                .iter()
                .filter(|w| w.publishes.iter().any(|k| k == key))
                .map(|w| w.worker.clone())
                .collect();
            if t.http_publishes.iter().any(|k| k == key) {
                who.push("http".into());
            }
            if t.portal_publishes.iter().any(|k| k == key) {
                who.push("portal".into());
            }
            who
        };
        for w in &t.workers {
            for binding in &w.bindings {
                let keys: Vec<String> = EventType::all()
                    .into_iter()
                    .map(EventType::routing_key)
                    .filter(|k| topic_matches(binding, k))
                    .collect();
                assert!(
                    !keys.is_empty(),
                    "{} binds {binding}: no such event",
                    w.worker
                );
                for key in keys {
                    let who = publishers(&key);
                    assert!(
                        !who.is_empty(),
                        "{} consumes {key}: nobody may publish it",
                        w.worker
                    );
                    if key.starts_with("case.") {
                        assert_eq!(who.len(), 1, "{key} published by {who:?}");
                    }
                }
            }
        }
        assert_eq!(publishers("case.approved"), ["review"]);
        assert_eq!(publishers("payment.reported"), ["http"]);
        assert_eq!(publishers("effect.payment.done"), ["notify"]);
        assert_eq!(publishers("review.decided"), ["http"]);
        assert_eq!(publishers("application.submitted"), ["portal"]);
    }
}
