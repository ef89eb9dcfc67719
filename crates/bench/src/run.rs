//! `wangban-bench`: the raw broker and wangban side by side, in one run, on the same services.
//!
//! - **wangban**: N generated cases through every worker (each worker its own `wangban serve`
//!   process, `--replicas` of each), with the outbox, inbox and audit on and the simulated
//!   parties answering at once. Measured: cases/s end to end (first submission to the last case
//!   in a final state), hop deliveries/s (every delivery any worker handled, until the pipeline
//!   is quiet), per-worker handling latency (from each process's histogram), per-case
//!   end-to-end latency, peak RSS per worker process, CPU of broker, database and workers.
//! - **baseline**: bare lapin on the same broker — a chain of quorum queues as many hops long as
//!   a wangban case, messages of the same mean size, publisher confirms and manual acks, the same
//!   prefetch and concurrency per stage — so the ratio says what wangban's guarantees cost.
//!
//! `--embedded` runs the same load in this process on the in-process bus and SQLite (the
//! baseline then is the in-process bus alone). Everything runs under a fresh queue prefix and
//! database schema, removed afterwards.

use anyhow::Context;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use wangban::demo::{Rng, Scenario, Uploads, application};
use wangban::pipeline::{Pipeline, WORKERS};
use wangban::processes::WorkerProcesses;
use wangban::settings::Settings;
use wangban_bus::Outgoing;
use wangban_domain::events::EventType;
use wangban_domain::ids::{ApplicationId, CaseId};
use wangban_domain::lifecycle::State;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    pub cases: usize,
    /// In-process bus and SQLite instead of RabbitMQ and PostgreSQL.
    pub embedded: bool,
    /// Processes per worker (real services only).
    pub replicas: usize,
    /// Offered load in cases/s; `None` submits everything at once.
    pub rate: Option<f64>,
    /// How long each simulated party takes to answer a call.
    pub provider_latency: Duration,
    pub baseline: bool,
    /// The `wangban` binary the worker processes run.
    pub binary: std::path::PathBuf,
}

/// Figures of one side.
#[derive(Clone, Debug, Default)]
pub struct Side {
    pub seconds: f64,
    pub hops: u64,
    pub hops_per_s: f64,
}

/// Everything `wangban-bench` prints.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub mode: &'static str,
    pub cases: usize,
    pub replicas: usize,
    pub offered_rate: Option<f64>,
    pub provider_latency_ms: u64,
    pub finished: usize,
    pub by_state: BTreeMap<String, usize>,
    pub cases_per_s: f64,
    pub hops_per_case: f64,
    pub event_bytes: f64,
    pub wangban: Side,
    pub baseline: Option<Side>,
    /// Per worker: (p50, p99) handling latency in ms, deliveries.
    pub handling: BTreeMap<String, (f64, f64, u64)>,
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// Per worker: the largest peak RSS of its processes, MiB.
    pub rss_mib: BTreeMap<String, f64>,
    /// CPU seconds of broker, database and workers during the wangban run.
    pub cpu: crate::system::CpuSplit,
    /// Deadlocks PostgreSQL broke in the database during the wangban run (every client of the
    /// database counted); `None` on SQLite.
    pub db_deadlocks: Option<i64>,
    /// Where the applicants' uploads were (intake reads four files per case from it).
    pub materials: String,
}

impl Report {
    pub fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .map(|b| self.wangban.hops_per_s / b.hops_per_s.max(f64::MIN_POSITIVE))
    }

    pub fn p99_hop_ms(&self) -> f64 {
        self.handling.values().map(|h| h.1).fold(0.0, f64::max)
    }

    pub fn max_rss_mib(&self) -> f64 {
        self.rss_mib.values().copied().fold(0.0, f64::max)
    }

    /// The one JSON line.
    pub fn json(&self) -> serde_json::Value {
        let round = |x: f64, d: i32| (x * 10f64.powi(d)).round() / 10f64.powi(d);
        json!({
            "cases_per_s": round(self.cases_per_s, 1),
            "hops_per_case": round(self.hops_per_case, 2),
            "baseline_hops_per_s": self.baseline.as_ref().map(|b| round(b.hops_per_s, 0)),
            // Three significant digits: the embedded run's ratio to the in-process bus is about
            // 0.0001, which three decimals would print as 0.
            "ratio": self.ratio().map(|r| round(r, significant_decimals(r, 3))),
            "p99_hop_ms": round(self.p99_hop_ms(), 2),
            "max_rss_mib": round(self.max_rss_mib(), 1),
            "wangban_hops_per_s": round(self.wangban.hops_per_s, 0),
            "e2e_p50_ms": round(self.e2e_p50_ms, 0),
            "e2e_p99_ms": round(self.e2e_p99_ms, 0),
            "cases": self.cases,
            "finished": self.finished,
            "replicas": self.replicas,
            "offered_cases_per_s": self.offered_rate,
            "provider_latency_ms": self.provider_latency_ms,
            "mode": self.mode,
            "materials": self.materials,
            "db_deadlocks": self.db_deadlocks,
            "cpu_s": {"broker": round(self.cpu.broker, 1), "database": round(self.cpu.database, 1),
                      "workers": round(self.cpu.workers, 1), "wall": round(self.cpu.wall, 1)},
        })
    }

    /// The table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let w = &self.wangban;
        let mut line = |l: String| {
            s.push_str(&l);
            s.push('\n');
        };
        line(format!(
            "wangban-bench ({}, {} cases, {} process(es) per worker{}, parties answer after {} ms)",
            self.mode,
            self.cases,
            self.replicas,
            self.offered_rate
                .map(|r| format!(", offered {r:.0} cases/s"))
                .unwrap_or_default(),
            self.provider_latency_ms
        ));
        line(format!(
            "  finished          {} of {}  {:?}",
            self.finished, self.cases, self.by_state
        ));
        line(format!("  {:<28} {:>12} {:>14}", "", "wangban", "baseline"));
        let b = self.baseline.as_ref();
        line(format!(
            "  {:<28} {:>12.1} {:>14}",
            "cases/s end to end", self.cases_per_s, "-"
        ));
        line(format!(
            "  {:<28} {:>12.0} {:>14}",
            "hop deliveries/s",
            w.hops_per_s,
            b.map_or("-".into(), |b| format!("{:.0}", b.hops_per_s))
        ));
        line(format!(
            "  {:<28} {:>12} {:>14}",
            "hops",
            w.hops,
            b.map_or("-".into(), |b| b.hops.to_string())
        ));
        line(format!(
            "  {:<28} {:>12.1} {:>14}",
            "seconds",
            w.seconds,
            b.map_or("-".into(), |b| format!("{:.1}", b.seconds))
        ));
        line(format!(
            "  hops per case {:.2}, mean event {:.0} bytes, ratio wangban/baseline {}",
            self.hops_per_case,
            self.event_bytes,
            self.ratio().map_or("-".into(), |r| format!(
                "{r:.*}",
                significant_decimals(r, 3) as usize
            ))
        ));
        line(format!(
            "  end-to-end latency per case: p50 {:.0} ms, p99 {:.0} ms",
            self.e2e_p50_ms, self.e2e_p99_ms
        ));
        line(format!(
            "  {:<12} {:>10} {:>10} {:>11} {:>12}",
            "worker", "p50 ms", "p99 ms", "deliveries", "peak RSS MiB"
        ));
        for (worker, (p50, p99, n)) in &self.handling {
            line(format!(
                "  {:<12} {:>10.2} {:>10.2} {:>11} {:>12.1}",
                worker,
                p50,
                p99,
                n,
                self.rss_mib.get(worker).copied().unwrap_or(0.0)
            ));
        }
        let c = &self.cpu;
        line(format!(
            "  CPU seconds over {:.1} s wall: broker {:.1}, database {:.1}, workers {:.1} (of {:.1} available)",
            c.wall,
            c.broker,
            c.database,
            c.workers,
            c.wall * c.cores as f64
        ));
        if let Some(n) = self.db_deadlocks {
            line(format!(
                "  PostgreSQL deadlocks during the run: {n} (pg_stat_database: every client of the database)"
            ));
        }
        s
    }
}

/// PostgreSQL's count of deadlocks it broke in the database `url` names, if it is PostgreSQL.
async fn deadlocks(url: &str) -> Option<i64> {
    use sqlx::Connection;
    if !url.starts_with("postgres") {
        return None;
    }
    let mut conn = sqlx::AnyConnection::connect(url).await.ok()?;
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_optional(&mut conn)
    .await
    .ok()?;
    let _ = conn.close().await;
    n
}

/// Runs the benchmark.
pub async fn run(base: &Settings, opts: &Options) -> anyhow::Result<Report> {
    let tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let mut settings = base.clone();
    settings.queue_prefix = format!("bench-{tag}.");
    settings.sim_delay = opts.provider_latency;
    // The simulated parties forget idempotency keys after a minute, as real ones do after a
    // day: otherwise their memory, not ours, would grow with N.
    settings.sim_ledger_retention = Some(Duration::from_secs(60));
    // Unpaid cases would wait for the payment window: the benchmark's cases all pay.
    let namespace = if opts.embedded {
        settings.amqp_url = None;
        let file = std::env::temp_dir().join(format!("wangban-bench-{tag}.sqlite"));
        settings.database_url = format!("sqlite://{}", file.display());
        Namespace::File(file)
    } else {
        anyhow::ensure!(
            settings.amqp_url.is_some(),
            "the benchmark needs RabbitMQ: set AMQP_URL (or pass --embedded)"
        );
        anyhow::ensure!(
            settings.database_url.starts_with("postgres"),
            "the benchmark needs PostgreSQL: set DATABASE_URL=postgres://… (or pass --embedded)"
        );
        let schema = format!("bench_{tag}");
        settings.database_url = with_search_path(&settings.database_url, &schema);
        Namespace::create_schema(&base.database_url, schema).await?
    };
    // The applicants upload real JPEGs: into the environment's materials store, or else into a
    // directory of this run's own, which intake (in every worker process) reads.
    let own_materials = match settings.materials {
        Some(_) => None,
        None => {
            let dir = std::env::temp_dir().join(format!("wangban-bench-{tag}-materials"));
            settings.materials = Some(wangban::settings::MaterialsStore(Arc::new(
                wangban_materials::LocalDir::new(&dir),
            )));
            Some(dir)
        }
    };
    let result = measure(&settings, opts, own_materials.as_deref()).await;
    namespace.drop(&base.database_url).await;
    if let Some(dir) = own_materials {
        let _ = std::fs::remove_dir_all(dir);
    }
    result
}

async fn measure(
    settings: &Settings,
    opts: &Options,
    own_materials: Option<&std::path::Path>,
) -> anyhow::Result<Report> {
    let pipeline = Pipeline::connect(settings).await?;
    let materials = settings
        .materials
        .as_ref()
        .context("the benchmark's materials store")?;
    let uploads = Uploads::put(materials.0.as_ref(), 7).await?;
    let mut report = Report {
        mode: if opts.embedded {
            "embedded: in-process bus, SQLite"
        } else {
            "RabbitMQ + PostgreSQL"
        },
        cases: opts.cases,
        replicas: if opts.embedded { 1 } else { opts.replicas },
        offered_rate: opts.rate,
        provider_latency_ms: opts.provider_latency.as_millis() as u64,
        materials: materials.0.describe(),
        ..Default::default()
    };

    // The workers.
    let mut processes = None;
    let mut in_process = None;
    if opts.embedded {
        in_process = Some(pipeline.spawn(&WORKERS)?);
    } else {
        // Every process opens its own pool: keep all of them within PostgreSQL's 100
        // connections (with room for this process and the operator).
        let procs = WORKERS.len() * opts.replicas;
        let mut s = settings.clone();
        s.db_pool_size = s.db_pool_size.min((80 / procs as u32).max(2));
        s.runtime.concurrency = s.runtime.concurrency.min(s.db_pool_size as usize);
        let dir = own_materials.map(|d| d.display().to_string());
        let extra: Vec<(&str, &str)> = dir
            .iter()
            .map(|d| ("WANGBAN_MATERIALS_DIR", d.as_str()))
            .collect();
        let p = WorkerProcesses::start(&opts.binary, &s, opts.replicas, &extra)
            .context("starting the worker processes")?;
        wait_for_consumers(&pipeline, opts.replicas as u32).await?;
        processes = Some(p);
    }

    // The load.
    let pids: Vec<(String, u32)> = match &processes {
        Some(p) => p.pids(),
        None => WORKERS
            .iter()
            .map(|w| (w.to_string(), std::process::id()))
            .collect(),
    };
    let cpu_before = crate::system::cpu_sample(&pids);
    let deadlocks_before = deadlocks(&settings.database_url).await;
    let run_id = format!("BENCH{}", &uuid::Uuid::new_v4().simple().to_string()[..6]).to_uppercase();
    let started = Instant::now();
    let submitted = submit(&pipeline, &run_id, opts, &uploads).await?;
    let (finished_at, by_state) = wait_for_cases(&pipeline, opts.cases, started).await?;
    quiet(&pipeline).await;
    let quiet_at = started.elapsed();
    let cpu_after = crate::system::cpu_sample(&pids);
    report.cpu = cpu_after.minus(&cpu_before);
    report.db_deadlocks = match (deadlocks_before, deadlocks(&settings.database_url).await) {
        (Some(before), Some(after)) => Some(after - before),
        _ => None,
    };

    let store = &pipeline.runtime.store;
    let (handled, event_bytes) = store.handled_and_event_size().await?;
    report.event_bytes = event_bytes;
    report.wangban = Side {
        seconds: quiet_at.as_secs_f64(),
        hops: handled as u64,
        hops_per_s: handled as f64 / quiet_at.as_secs_f64(),
    };
    report.finished = by_state.values().sum();
    report.by_state = by_state;
    report.cases_per_s = report.finished as f64 / finished_at.as_secs_f64();
    report.hops_per_case = handled as f64 / opts.cases.max(1) as f64;

    // Per-case end-to-end latency: submission to the final state.
    let mut e2e: Vec<f64> = store
        .case_times(&run_id)
        .await?
        .into_iter()
        .filter_map(|(app, _, at)| submitted.get(&app).map(|s| (at - s) as f64))
        .collect();
    e2e.sort_by(f64::total_cmp);
    report.e2e_p50_ms = percentile(&e2e, 0.50);
    report.e2e_p99_ms = percentile(&e2e, 0.99);

    // Handling latency and memory, per worker.
    match processes {
        Some(p) => {
            let mut texts = Vec::new();
            for (worker, pid, addr) in p.addresses()? {
                texts.push(crate::system::scrape_metrics(&addr).await?);
                let rss = crate::system::peak_rss_mib(pid);
                let e = report.rss_mib.entry(worker).or_default();
                *e = e.max(rss);
            }
            report.handling = handling_percentiles(&texts);
            p.stop();
        }
        None => {
            let mut text = String::new();
            pipeline.runtime.metrics.render(&mut text);
            report.handling = handling_percentiles(&[text]);
            let rss = crate::system::peak_rss_mib(std::process::id());
            for w in WORKERS {
                report.rss_mib.insert(w.to_string(), rss);
            }
        }
    }
    if let Some(r) = in_process {
        r.stop().await;
    }

    if opts.baseline {
        let hops = report.hops_per_case.round().max(1.0) as usize;
        let size = event_bytes.round().max(64.0) as usize;
        let side = if opts.embedded {
            crate::baseline::in_process(opts.cases, hops, size, &settings.runtime).await?
        } else {
            let url = settings.amqp_url.as_deref().unwrap_or_default();
            crate::baseline::lapin_chain(
                url,
                &settings.queue_prefix,
                opts.cases,
                hops,
                size,
                settings,
            )
            .await?
        };
        report.baseline = Some(side);
    }
    let _ = pipeline.runtime.bus.teardown(&pipeline.topology).await;
    pipeline.runtime.store.close().await;
    Ok(report)
}

/// The benchmark's mix: every case goes through the whole lifecycle its kind has, with parties
/// that answer at once — couriers and pickups of all three documents, one in ten rejected by
/// review, one in ten refused at intake.
fn scenario(n: usize) -> Scenario {
    const FULL: [Scenario; 4] = [
        Scenario::PassportCourier,
        Scenario::PermitPickup,
        Scenario::TaiwanStolenCourier,
        Scenario::VisaPagesFullPickup,
    ];
    const REFUSED: [Scenario; 4] = [
        Scenario::NotPilotCity,
        Scenario::Expired,
        Scenario::OutsideMainland,
        Scenario::PhotoNonconforming,
    ];
    match n % 10 {
        8 => Scenario::ReviewRejected,
        9 => REFUSED[(n / 10) % REFUSED.len()],
        i => FULL[i % FULL.len()],
    }
}

/// Submits the cases in confirmed batches (paced to `opts.rate` when set); returns when each
/// application was handed over (ms since the epoch).
async fn submit(
    pipeline: &Pipeline,
    run_id: &str,
    opts: &Options,
    uploads: &Uploads,
) -> anyhow::Result<HashMap<String, i64>> {
    let mut rng = Rng::new(7);
    let mut submitted = HashMap::with_capacity(opts.cases);
    let started = Instant::now();
    let batch = match opts.rate {
        Some(r) => ((r / 50.0).ceil() as usize).clamp(1, 200),
        None => 200,
    };
    let mut n = 0;
    while n < opts.cases {
        if let Some(rate) = opts.rate {
            let due = Duration::from_secs_f64(n as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut out = Vec::with_capacity(batch);
        let mut ids = Vec::with_capacity(batch);
        for i in n..(n + batch).min(opts.cases) {
            let mut app = application(run_id, i, scenario(i), &mut rng);
            uploads.declare(&mut app, scenario(i));
            let id = app["application_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let case = CaseId::for_application(
                &ApplicationId::parse(&id).map_err(|e| anyhow::anyhow!("{e}"))?,
            );
            let event = wangban_runtime::ingress::event(
                pipeline.runtime.store.clock(),
                EventType::ApplicationSubmitted,
                "/bench",
                &case,
                None,
                app,
            );
            out.push(Outgoing {
                routing_key: event.routing_key(),
                message_id: event.id.to_string(),
                payload: event.encode(),
                traceparent: None,
            });
            ids.push(id);
        }
        pipeline
            .runtime
            .bus
            .publish(&out)
            .await
            .map_err(|e| anyhow::anyhow!("submitting: {e}"))?;
        let now = pipeline.runtime.store.clock().now_ms();
        n += out.len();
        submitted.extend(ids.into_iter().map(|id| (id, now)));
        if n % 5_000 < out.len() || n == opts.cases {
            wangban::progress::show(&format!("[bench] submitted {n}/{} cases", opts.cases));
        }
    }
    wangban::progress::end();
    Ok(submitted)
}

/// Waits until every case of the run is in a final state, printing progress; returns when the
/// last one got there and how many ended in each final state. The run has its own schema or
/// file, so every case counts; the count uses the state index and runs every 2 s (at 100,000
/// cases a scan of the case rows every half second cost the database more than a worker did).
async fn wait_for_cases(
    pipeline: &Pipeline,
    cases: usize,
    started: Instant,
) -> anyhow::Result<(Duration, BTreeMap<String, usize>)> {
    let budget = Duration::from_secs(120) + Duration::from_millis(100 * cases as u64);
    let mut last = (0usize, Instant::now());
    loop {
        let done: BTreeMap<String, usize> = pipeline
            .runtime
            .store
            .count_by_state()
            .await?
            .into_iter()
            .filter(|(s, _)| State::parse(s).is_some_and(State::is_terminal))
            .map(|(s, n)| (s, n as usize))
            .collect();
        let finished: usize = done.values().sum();
        let elapsed = started.elapsed();
        let rate = (finished - last.0.min(finished)) as f64 / last.1.elapsed().as_secs_f64();
        wangban::progress::show(&format!(
            "[bench] wangban: {finished}/{cases} cases final, {rate:.0} cases/s now, {:.1} s",
            elapsed.as_secs_f64()
        ));
        last = (finished, Instant::now());
        if finished >= cases {
            wangban::progress::end();
            return Ok((elapsed, done));
        }
        if elapsed > budget {
            wangban::progress::end();
            anyhow::bail!(
                "only {finished} of {cases} cases reached a final state within {budget:?}"
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Waits until the outbox is relayed and every worker queue is empty.
async fn quiet(pipeline: &Pipeline) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline && !pipeline.is_quiet().await {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_consumers(pipeline: &Pipeline, replicas: u32) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut ready = true;
        for w in &pipeline.topology.workers {
            ready &= pipeline
                .runtime
                .bus
                .stats(&w.worker)
                .await
                .is_ok_and(|s| s.consumers >= replicas);
        }
        if ready {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the worker processes did not start consuming within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Per worker (p50 ms, p99 ms, deliveries) from the `wangban_handle_seconds` histograms of one
/// or more processes' metrics (summed), interpolating within a bucket as Prometheus does.
pub fn handling_percentiles(texts: &[String]) -> BTreeMap<String, (f64, f64, u64)> {
    let mut buckets: BTreeMap<String, BTreeMap<u64, (f64, u64)>> = BTreeMap::new();
    for text in texts {
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("wangban_handle_seconds_bucket{worker=\"") else {
                continue;
            };
            let Some((worker, rest)) = rest.split_once("\",le=\"") else {
                continue;
            };
            let Some((le, count)) = rest.split_once("\"} ") else {
                continue;
            };
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            let count: u64 = count.trim().parse().unwrap_or(0);
            let e = buckets
                .entry(worker.to_owned())
                .or_default()
                .entry(bound.to_bits())
                .or_insert((bound, 0));
            e.1 += count;
        }
    }
    buckets
        .into_iter()
        .map(|(worker, b)| {
            let mut cumulative: Vec<(f64, u64)> = b.into_values().collect();
            cumulative.sort_by(|a, b| a.0.total_cmp(&b.0));
            let total = cumulative.last().map_or(0, |c| c.1);
            let q = |q: f64| quantile_from_buckets(&cumulative, total, q) * 1000.0;
            (worker, (q(0.5), q(0.99), total))
        })
        .collect()
}

fn quantile_from_buckets(cumulative: &[(f64, u64)], total: u64, q: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let target = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, count) in cumulative {
        if count as f64 >= target {
            if bound.is_infinite() {
                return lower; // beyond the last finite bucket: report its bound
            }
            let within = (count - below).max(1) as f64;
            return lower + (bound - lower) * ((target - below as f64) / within);
        }
        (lower, below) = (bound, count);
    }
    lower
}

fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

enum Namespace {
    File(std::path::PathBuf),
    Schema(String),
}

impl Namespace {
    async fn create_schema(url: &str, schema: String) -> anyhow::Result<Namespace> {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(url)
            .await
            .with_context(|| "connecting to PostgreSQL".to_string())?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await?;
        let _ = admin.close().await;
        Ok(Namespace::Schema(schema))
    }

    async fn drop(self, url: &str) {
        match self {
            Namespace::File(f) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", f.display()));
                }
            }
            Namespace::Schema(schema) => {
                use sqlx::Connection;
                if let Ok(mut admin) = sqlx::AnyConnection::connect(url).await {
                    let _ =
                        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
                            .execute(&mut admin)
                            .await;
                }
            }
        }
    }
}

/// The decimals that show `digits` significant digits of `x` (at least 3).
fn significant_decimals(x: f64, digits: i32) -> i32 {
    if x == 0.0 || !x.is_finite() {
        return 3;
    }
    (digits - 1 - x.abs().log10().floor() as i32).max(3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_ratio_keeps_three_significant_digits() {
        assert_eq!(significant_decimals(0.054, 3), 4);
        assert_eq!(significant_decimals(0.000117, 3), 6);
        assert_eq!(significant_decimals(0.25, 3), 3);
        assert_eq!(significant_decimals(0.0, 3), 3);
        let report = Report {
            wangban: Side {
                hops_per_s: 60.0,
                ..Side::default()
            },
            baseline: Some(Side {
                hops_per_s: 513_272.0,
                ..Side::default()
            }),
            ..Report::default()
        };
        assert_eq!(report.json()["ratio"], serde_json::json!(0.000117));
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
    }

    #[test]
    fn handling_percentiles_sum_processes_and_interpolate() {
        let a = "wangban_handle_seconds_bucket{worker=\"intake\",le=\"0.001\"} 0\n\
                 wangban_handle_seconds_bucket{worker=\"intake\",le=\"0.002\"} 50\n\
                 wangban_handle_seconds_bucket{worker=\"intake\",le=\"0.01\"} 100\n\
                 wangban_handle_seconds_bucket{worker=\"intake\",le=\"+Inf\"} 100\n";
        let p = handling_percentiles(&[a.to_string(), a.to_string()]);
        let (p50, p99, n) = p["intake"];
        assert_eq!(n, 200);
        assert!((p50 - 2.0).abs() < 1e-9, "{p50}");
        // 99 % of 200 = 198: 98 of the 100 in (2 ms, 10 ms].
        assert!((p99 - (2.0 + 8.0 * 0.98)).abs() < 1e-9, "{p99}");
    }

    #[test]
    fn the_mix_is_mostly_whole_lifecycles() {
        let full = (0..1000)
            .filter(|n| matches!(scenario(*n).expected(), "delivered" | "collected"))
            .count();
        assert_eq!(full, 800);
    }
}
