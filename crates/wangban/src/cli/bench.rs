//! `wangban bench`: wangban beside the bare broker in one run.

use super::{Services, init_logs, settings};
use std::process::ExitCode;

/// What `bench` is asked for.
#[derive(clap::Args)]
pub struct Args {
    /// Number of cases.
    #[arg(long, default_value_t = 10_000)]
    pub cases: usize,
    /// The same load on the in-process bus and SQLite, in this process.
    #[arg(long)]
    pub embedded: bool,
    /// `wangban serve` processes per worker.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Offered load in cases/s (default: everything submitted at once).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Milliseconds each simulated party (SMS, payment, centre, courier, hall, desk) takes
    /// to answer a call, as real gateways take hundreds.
    #[arg(long, default_value_t = 0)]
    pub provider_latency_ms: u64,
    /// Skip the raw-broker baseline.
    #[arg(long)]
    pub no_baseline: bool,
}

pub async fn run(services: Services, args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        cases,
        embedded,
        replicas,
        rate,
        provider_latency_ms,
        no_baseline,
    } = args;
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
