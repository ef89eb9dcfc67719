//! `wangban-bench`: wangban beside the bare broker in one run (docs/performance.md). Not part of
//! the shipped `wangban` binary; it runs that binary's `serve` as the worker processes it
//! measures, taken from beside its own executable unless `--wangban` names another.

mod baseline;
mod run;
mod system;

use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use wangban::command::{Services, Usage, init_logs, settings, usage};

/// Measure wangban beside the raw broker in one run: N cases through worker processes on
/// RabbitMQ and PostgreSQL, then bare lapin with the same hops; a table and one JSON line.
#[derive(Parser)]
#[command(name = "wangban-bench", version)]
struct Args {
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
    /// The `wangban` binary the worker processes run (default: the one beside this program).
    #[arg(long)]
    wangban: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wangban-bench: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(bench(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<Usage>().is_some() => {
            eprintln!("wangban-bench: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("wangban-bench: {e:#}");
            ExitCode::from(3)
        }
    }
}

async fn bench(args: Args) -> anyhow::Result<()> {
    init_logs("error");
    let s = settings(&args.services, "")?;
    let binary = match args.wangban {
        Some(path) => path,
        None => std::env::current_exe()?.with_file_name("wangban"),
    };
    if !args.embedded && !binary.is_file() {
        return Err(usage(format!(
            "no wangban binary at {} to run the workers: build it (cargo build --release -p wangban) or pass --wangban",
            binary.display()
        )));
    }
    let opts = run::Options {
        cases: args.cases,
        embedded: args.embedded,
        replicas: args.replicas.max(1),
        rate: args.rate.filter(|r| *r > 0.0),
        provider_latency: std::time::Duration::from_millis(args.provider_latency_ms),
        baseline: !args.no_baseline,
        binary,
    };
    let report = run::run(&s, &opts).await?;
    print!("{}", report.table());
    println!("{}", report.json());
    Ok(())
}
