//! `wangban`: one binary for every worker and every operator command. See `wangban --help`.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use wangban::demo;
use wangban::pipeline::{Pipeline, WORKERS};
use wangban::settings::Settings;

#[derive(Parser)]
#[command(
    name = "wangban",
    version,
    about = "Back office for fully-online replacement and reissue of exit-entry documents (全程网办)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Services {
    /// RabbitMQ URL; without it the in-process bus is used.
    #[arg(long, env = "AMQP_URL")]
    amqp_url: Option<String>,
    /// `postgres://…` or `sqlite://FILE`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

/// The services of a command that publishes (`submit`, `dlq replay`): a broker is required, the
/// in-process bus living only as long as the command.
#[derive(Args, Clone)]
struct Broker {
    /// RabbitMQ URL, required.
    #[arg(long, env = "AMQP_URL")]
    amqp_url: String,
    /// `postgres://…` or `sqlite://FILE`.
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

impl Broker {
    fn services(&self) -> anyhow::Result<Services> {
        if self.amqp_url.trim().is_empty() {
            return Err(usage(
                "AMQP_URL is empty: this command publishes, and the in-process bus would live only as long as it",
            ));
        }
        Ok(Services {
            amqp_url: Some(self.amqp_url.clone()),
            database_url: self.database_url.clone(),
        })
    }
}

/// The store an inspecting command reads. There is no default: reading a store that does not
/// exist is a mistake, never an empty success.
#[derive(Args, Clone)]
struct Database {
    /// `postgres://…` or `sqlite://FILE` (an existing file: the demo prints its own).
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
}

/// A mistake in how a command was called or configured (exit 2, as for clap's usage errors).
#[derive(Debug)]
struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

#[derive(Subcommand)]
enum Command {
    /// Check application files against every eligibility rule (all but
    /// duplicate_active_application, which needs the store). One JSON line per file.
    Check {
        /// Application JSON files (the contract of domain.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A pilot-city list replacing the shipped one.
        #[arg(long, env = "WANGBAN_PILOT_CITIES")]
        pilot_cities: Option<PathBuf>,
    },
    /// Run workers until SIGINT/SIGTERM (all five unless --workers names some).
    Serve {
        #[command(flatten)]
        services: Services,
        /// Comma-separated subset of: intake, review, notify, production, courier; `none` for
        /// only the HTTP surface.
        #[arg(long, value_delimiter = ',')]
        workers: Option<Vec<String>>,
        /// HTTP address for /healthz, /readyz, /metrics, the operations API and /dashboard.
        #[arg(long, env = "WANGBAN_HTTP_ADDR")]
        http_addr: Option<String>,
    },
    /// Dead letters: messages a worker refused, kept until an operator replays them.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Drive generated applications of every kind through the whole pipeline.
    Demo {
        #[command(flatten)]
        services: Services,
        /// Number of applications.
        #[arg(long, default_value_t = 200)]
        cases: usize,
        /// Seed of the generator.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print only one JSON line on stdout (the tables go to stderr):
        /// {"cases": N, "by_state": {...}, "unexpected": K, "scenarios": {"<name>": {"cases": n, "unexpected": k}, ...}}.
        #[arg(long)]
        json: bool,
    },
    /// Measure wangban beside the raw broker in one run: N cases through worker processes on
    /// RabbitMQ and PostgreSQL, then bare lapin with the same hops; a table and one JSON line.
    Bench {
        #[command(flatten)]
        services: Services,
        /// Number of cases.
        #[arg(long, default_value_t = 10_000)]
        cases: usize,
        /// The same load on the in-process bus and SQLite, in this process.
        #[arg(long)]
        embedded: bool,
        /// `wangban serve` processes per worker.
        #[arg(long, default_value_t = 1)]
        replicas: usize,
        /// Offered load in cases/s (default: everything submitted at once).
        #[arg(long)]
        rate: Option<f64>,
        /// Milliseconds each simulated party (SMS, payment, centre, courier, hall, desk) takes
        /// to answer a call, as real gateways take hundreds.
        #[arg(long, default_value_t = 0)]
        provider_latency_ms: u64,
        /// Skip the raw-broker baseline.
        #[arg(long)]
        no_baseline: bool,
    },
    /// Hand application files to intake as the portal does, retrying while the broker is away.
    Submit {
        #[command(flatten)]
        broker: Broker,
        /// Application JSON files (the contract of domain.md).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Send as corrected resubmissions.
        #[arg(long)]
        resubmit: bool,
    },
    /// Cases.
    Case {
        #[command(subcommand)]
        command: CaseCommand,
    },
    /// The audit store.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Check the invariants of the whole store (lifecycle paths, audit chains, effects once and
    /// where they belong); exit 1 naming the first violation.
    Verify {
        #[command(flatten)]
        database: Database,
        /// Print the result as one JSON object.
        #[arg(long)]
        json: bool,
        /// Events younger than this many seconds need not be handled yet.
        #[arg(long, default_value_t = 60)]
        grace_secs: u64,
    },
    /// Exit 0 when URL answers 200 (a health check for images without curl).
    Probe {
        /// e.g. http://127.0.0.1:8080/readyz
        url: String,
    },
    /// A fresh reviewer token and the SHA-256 the reviewers file keeps of it: give the token to
    /// the reviewer, put the digest in their `token_sha256`.
    ReviewerToken,
    /// Check a reviewers file (offices, districts, reviewers, halls, hall staff); exit 1 naming
    /// the first problem.
    CheckReviewers {
        /// The reviewers file (JSON: offices, reviewers, halls, hall staff).
        file: PathBuf,
    },
    /// Write the RabbitMQ definitions (exchanges, quorum queues, bindings) as JSON.
    Topology {
        /// Output file (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Each dead letter with its reason, event type, case and first/last failure.
    List {
        #[arg(long)]
        worker: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        database: Database,
    },
    /// Put dead letters back into their worker's queue, each exactly once.
    Replay {
        /// The dead letter's id.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<i64>,
        /// Every unreplayed dead letter of --worker.
        #[arg(long, requires = "worker")]
        all: bool,
        #[arg(long)]
        worker: Option<String>,
        #[command(flatten)]
        broker: Broker,
    },
}

#[derive(Subcommand)]
enum CaseCommand {
    /// A case's timeline, by case id, application id or ID number (`-` reads it from stdin,
    /// keeping it out of shell history), with the ID number masked.
    Show {
        /// A case id, an application id, an ID number, or `-` to read one from stdin.
        id: String,
        #[command(flatten)]
        database: Database,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every case's hash chain; exit 1 naming the first broken record.
    Verify {
        #[command(flatten)]
        database: Database,
    },
}

const DEFAULT_DATABASE: &str = "sqlite://wangban.sqlite";

fn settings(services: &Services, default_database: &str) -> anyhow::Result<Settings> {
    let mut s = Settings::from_env(default_database).map_err(|e| usage(format!("{e:#}")))?;
    if let Some(url) = &services.amqp_url {
        s.amqp_url = Some(url.clone()).filter(|u| !u.is_empty());
    }
    if let Some(url) = &services.database_url {
        s.database_url = url.clone();
    }
    Ok(s)
}

/// The settings of an inspecting command and its store: the database must be named and, for
/// SQLite, exist.
async fn existing_store(db: &Database) -> anyhow::Result<(Settings, wangban_store::Store)> {
    let Some(url) = db.database_url.clone().filter(|u| !u.is_empty()) else {
        return Err(usage(
            "no database: set DATABASE_URL or pass --database-url (postgres://… or sqlite://FILE)",
        ));
    };
    if let Some(file) = url.strip_prefix("sqlite://") {
        let path = file.split('?').next().unwrap_or(file);
        if !std::path::Path::new(path).exists() {
            return Err(usage(format!("no such database file: {path}")));
        }
    }
    let mut s = Settings::from_env(&url).map_err(|e| usage(format!("{e:#}")))?;
    s.database_url = url;
    let store = wangban_store::Store::connect(&s.database_url, s.fingerprint_key.expose()).await?;
    Ok((s, store))
}

fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check {
        files,
        pilot_cities,
    } = &cli.command
    {
        return match wangban::check::run(files, pilot_cities.as_deref()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("wangban: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wangban: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(code) => code,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("wangban: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("wangban: {e:#}");
            ExitCode::from(3)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check { .. } => unreachable!("handled without a runtime"),
        Command::Serve {
            services,
            workers,
            http_addr,
        } => {
            init_logs("info");
            let mut s = settings(&services, DEFAULT_DATABASE)?;
            if let Some(addr) = http_addr {
                s.http_addr = addr;
            }
            let workers: Vec<String> =
                workers.unwrap_or_else(|| WORKERS.iter().map(|w| w.to_string()).collect());
            // `--workers none`: only the HTTP surface (operations API and dashboard).
            let names: Vec<&str> = workers
                .iter()
                .map(String::as_str)
                .filter(|w| *w != "none")
                .collect();
            tracing::info!(workers = ?names, embedded_bus = s.amqp_url.is_none(), "starting");
            let (_keep, never) = tokio::sync::watch::channel(false);
            if let Err(e) = wangban::serve::run(&s, &names, never).await {
                // The one line a log shipper must not drop: JSON like every other.
                tracing::error!(error = format!("{e:#}"), "wangban serve stopped");
                return Ok(ExitCode::from(3));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq {
            command:
                DlqCommand::List {
                    worker,
                    json,
                    database,
                },
        } => {
            init_logs("warn");
            let (_, store) = existing_store(&database).await?;
            let list = store.dead_letters(worker.as_deref()).await?;
            if json {
                for d in &list {
                    println!("{}", serde_json::to_string(d)?);
                }
            } else {
                print!("{}", wangban::show::dead_letters(&list));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    id,
                    all,
                    worker,
                    broker,
                },
        } => {
            init_logs("warn");
            let s = settings(&broker.services()?, DEFAULT_DATABASE)?;
            let pipeline = Pipeline::connect(&s).await?;
            let ids = if all {
                pipeline
                    .runtime
                    .store
                    .unreplayed_dead_letters(worker.as_deref())
                    .await?
            } else {
                id.into_iter().collect()
            };
            let mut missing = 0;
            for id in ids {
                if pipeline
                    .runtime
                    .replay_dead_letter(id)
                    .await
                    .map_err(anyhow::Error::msg)?
                {
                    println!("replayed {id}");
                } else {
                    eprintln!("wangban: no unreplayed dead letter {id}");
                    missing += 1;
                }
            }
            Ok(if missing == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Bench {
            services,
            cases,
            embedded,
            replicas,
            rate,
            provider_latency_ms,
            no_baseline,
        } => {
            init_logs("error");
            let s = settings(&services, "")?;
            let opts = wangban::bench::Options {
                cases,
                embedded,
                replicas: replicas.max(1),
                rate: rate.filter(|r| *r > 0.0),
                provider_latency: std::time::Duration::from_millis(provider_latency_ms),
                baseline: !no_baseline,
                binary: std::env::current_exe()?,
            };
            let report = wangban::bench::run(&s, &opts).await?;
            print!("{}", report.table());
            println!("{}", report.json());
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo {
            services,
            cases,
            seed,
            json,
        } => {
            // The demo refuses malformed applications on purpose: only errors interrupt its table.
            init_logs("error");
            let default_db = format!(
                "sqlite://{}",
                std::env::temp_dir()
                    .join(format!("wangban-demo-{}.sqlite", std::process::id()))
                    .display()
            );
            let mut s = settings(&services, &default_db)?;
            if std::env::var("WANGBAN_PAYMENT_WINDOW_SECS").is_err() {
                // The demo cannot wait 7 days: unpaid cases lapse after a few seconds.
                s.fees.payment_window = std::time::Duration::from_millis(3000 + 10 * cases as u64);
                s.fees.reminder_after = s.fees.payment_window / 2;
                s.runtime.tick = std::time::Duration::from_millis(250);
            }
            if std::env::var("WANGBAN_RESUBMIT_WITHIN_SECS").is_err() {
                // Nor 7 days for a correction: an unanswered one lapses after seconds, long
                // enough that the demo's answered corrections are always in time.
                s.resubmit_within = std::time::Duration::from_millis(10_000 + 30 * cases as u64);
            }
            if s.amqp_url.is_some() && s.queue_prefix.is_empty() {
                s.queue_prefix = format!("demo-{}.", std::process::id());
            }
            eprintln!(
                "wangban demo: {cases} applications on {} and {}",
                if s.amqp_url.is_some() {
                    "RabbitMQ"
                } else {
                    "the in-process bus"
                },
                if s.database_url.starts_with("postgres") {
                    "PostgreSQL"
                } else {
                    "SQLite"
                }
            );
            let (pipeline, report) = demo::run(&s, cases, seed, true).await?;
            // With --json, stdout carries only the JSON line; the tables go to stderr.
            let mut out: Box<dyn std::io::Write> = if json {
                Box::new(std::io::stderr())
            } else {
                Box::new(std::io::stdout())
            };
            writeln!(out, "\n{:<26} {:>7}", "final state", "cases")?;
            for (state, n) in &report.by_state {
                writeln!(out, "{state:<26} {n:>7}")?;
            }
            writeln!(
                out,
                "{:<26} {:>7}\n\n{} applications in {:.1} s; unexpected outcomes: {}",
                "total",
                report.by_state.values().sum::<usize>(),
                report.cases,
                report.elapsed.as_secs_f64(),
                report.unexpected.len()
            )?;
            for (id, want, got) in report.unexpected.iter().take(10) {
                writeln!(out, "  unexpected: {id}: expected {want}, got {got}")?;
            }
            writeln!(
                out,
                "\n{:<26} {:>7} {:>10}",
                "scenario", "cases", "unexpected"
            )?;
            for (name, c) in &report.scenarios {
                writeln!(out, "{name:<26} {:>7} {:>10}", c.cases, c.unexpected)?;
            }
            writeln!(
                out,
                "\n{:<12} {:>10} {:>10} {:>12}",
                "worker", "deliveries", "mean ms", "p99 ≤ ms"
            )?;
            for w in WORKERS {
                let (n, sum, p99) = pipeline.runtime.metrics.worker_summary(w);
                let mean = if n > 0 { 1000.0 * sum / n as f64 } else { 0.0 };
                writeln!(
                    out,
                    "{w:<12} {n:>10} {mean:>10.2} {:>12}",
                    if p99.is_finite() {
                        format!("{:.1}", p99 * 1000.0)
                    } else {
                        "> 10000".into()
                    }
                )?;
            }
            drop(out);
            if json {
                let line = serde_json::json!({
                    "cases": report.cases,
                    "by_state": report.by_state,
                    "unexpected": report.unexpected.len(),
                    "scenarios": report.scenarios,
                });
                println!("{line}");
            } else if let Some(id) = &report.sample_case {
                println!("\nOne case's timeline:");
                wangban::show::case(&pipeline.runtime.store, id).await?;
            }
            pipeline.runtime.store.close().await;
            Ok(if report.unexpected.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Submit {
            broker,
            files,
            resubmit,
        } => {
            init_logs("warn");
            let s = settings(&broker.services()?, DEFAULT_DATABASE)?;
            let pipeline = Pipeline::connect_as_portal(&s).await?;
            for f in files {
                let text =
                    std::fs::read(&f).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
                let value: serde_json::Value = serde_json::from_slice(&text)
                    .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", f.display()))?;
                let case = pipeline.submit(&value, resubmit).await?;
                println!("{}\t{case}", f.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Case {
            command: CaseCommand::Show { id, database },
        } => {
            init_logs("warn");
            let (_, store) = existing_store(&database).await?;
            let id = if id == "-" {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim().to_owned()
            } else {
                id
            };
            if wangban::show::case(&store, &id).await? {
                Ok(ExitCode::SUCCESS)
            } else {
                let shown = if wangban_domain::id_number::IdNumber::parse(&id).is_ok() {
                    wangban_domain::id_number::mask(&id)
                } else {
                    id
                };
                eprintln!("wangban: no case {shown}");
                Ok(ExitCode::from(1))
            }
        }
        Command::Audit {
            command: AuditCommand::Verify { database },
        } => {
            init_logs("warn");
            let (_, store) = existing_store(&database).await?;
            Ok(if wangban::show::audit(&store).await? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Verify {
            database,
            json,
            grace_secs,
        } => {
            init_logs("warn");
            let (s, store) = existing_store(&database).await?;
            let queues = wangban::pipeline::worker_queues(&s);
            let v =
                wangban::verify::check(&store, &queues, std::time::Duration::from_secs(grace_secs))
                    .await?;
            if json {
                println!("{}", serde_json::to_string(&v)?);
            } else {
                println!(
                    "checked {} cases, {} audit records, {} effects, {} events; outbox backlog {}; effects pending {}, dead {}; unreplayed dead letters {}",
                    v.cases,
                    v.audit_records,
                    v.effects,
                    v.events_accounted,
                    v.outbox_backlog,
                    v.effects_pending,
                    v.effects_dead,
                    v.unreplayed_dead_letters
                );
                match v.violations.first() {
                    None => println!("no violations"),
                    Some(first) => println!("{} violations; first: {first}", v.violations.len()),
                }
            }
            Ok(if v.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Probe { url } => Ok(if wangban::serve::probe(&url).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Command::ReviewerToken => {
            // 244 random bits from the operating system's generator (two v4 UUIDs).
            let token = format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            );
            let digest = wangban_review::desk_file::token_digest(&token);
            println!(
                "token:        {token}
token_sha256: {digest}"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckReviewers { file } => match wangban::settings::load_desk(&file) {
            Ok(desk) => {
                println!(
                    "{}: {} offices, {} reviewers, {} halls, {} hall staff",
                    file.display(),
                    desk.offices.len(),
                    desk.reviewers.len(),
                    desk.halls.len(),
                    desk.hall_staff.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Topology { output } => {
            let s = Settings::from_env(DEFAULT_DATABASE)?;
            let topology = wangban::pipeline::offline_topology(&s);
            let text = serde_json::to_string_pretty(&topology.rabbitmq_definitions())? + "\n";
            match output {
                Some(path) => std::fs::write(&path, text)?,
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
