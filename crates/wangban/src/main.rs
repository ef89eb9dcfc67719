//! `wangban`: one binary for every worker and every operator command. See `wangban --help`.

mod cli;

use clap::{Parser, Subcommand};
use cli::{Broker, Database, Services, Usage};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wangban",
    version,
    about = "Back office for fully-online replacement and reissue of exit-entry documents (全程网办)",
    after_help = "Exit codes: 0 done; 1 ran and found a problem (a violation, a broken chain, a case not found); \
                  2 a usage or configuration mistake; 3 a failure while running (a service unreachable)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
        /// A directory holding each material under its SHA-256 (the local materials store's
        /// layout): the photo guide is then applied to the files, a declared material without
        /// its file is missing, and each line names where a declaration disagrees with its file.
        #[arg(long)]
        materials: Option<PathBuf>,
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
        /// Play only the portal and the applicants, against workers already running elsewhere
        /// on the same broker and database (the compose stack, a deployment), whose settings
        /// rule: give this process the same payment and correction windows.
        #[arg(long)]
        external: bool,
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
    /// Personal data past its keeping time (WANGBAN_RETENTION_DAYS after a case closed).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
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
        /// A directory with one file per broker user (wangban-intake, wangban-review,
        /// wangban-notify, wangban-production, wangban-courier, wangban-ops, wangban-portal)
        /// holding its password: the definitions then create the users with salted hashes of
        /// them and topic permissions limiting each to the events it publishes (a deployment's
        /// definitions). Without it, the definitions hold no users (the template).
        #[arg(long)]
        passwords: Option<PathBuf>,
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
enum RetentionCommand {
    /// Erase the personal fields of cases closed more than WANGBAN_RETENTION_DAYS ago and the
    /// payloads of dead letters as old (`serve` does this every hour); the audit chains stay.
    Run {
        #[command(flatten)]
        database: Database,
        /// Only count what would be erased.
        #[arg(long)]
        dry_run: bool,
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Check {
        files,
        pilot_cities,
        materials,
    } = &cli.command
    {
        return match wangban::check::run(files, pilot_cities.as_deref(), materials.as_deref()) {
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
        } => cli::serve::run(services, workers, http_addr).await,
        Command::Dlq {
            command:
                DlqCommand::List {
                    worker,
                    json,
                    database,
                },
        } => cli::dlq::list(worker, json, database).await,
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    id,
                    all,
                    worker,
                    broker,
                },
        } => cli::dlq::replay(id, all, worker, broker).await,
        Command::Demo {
            services,
            cases,
            seed,
            json,
            external,
        } => cli::demo::run(services, cases, seed, json, external).await,
        Command::Submit {
            broker,
            files,
            resubmit,
        } => cli::submit::run(broker, files, resubmit).await,
        Command::Case {
            command: CaseCommand::Show { id, database },
        } => cli::store::case_show(id, database).await,
        Command::Audit {
            command: AuditCommand::Verify { database },
        } => cli::store::audit_verify(database).await,
        Command::Verify {
            database,
            json,
            grace_secs,
        } => cli::store::verify(database, json, grace_secs).await,
        Command::Retention {
            command: RetentionCommand::Run { database, dry_run },
        } => cli::store::retention(database, dry_run).await,
        Command::Probe { url } => Ok(if wangban::serve::probe(&url).await {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }),
        Command::ReviewerToken => cli::config::reviewer_token(),
        Command::CheckReviewers { file } => cli::config::check_reviewers(file),
        Command::Topology { output, passwords } => cli::config::topology(output, passwords),
    }
}
