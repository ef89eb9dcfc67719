//! `wangban serve`: the named workers, the relay and the HTTP surface until SIGINT/SIGTERM.

use super::{DEFAULT_DATABASE, Services, init_logs, settings};
use std::process::ExitCode;
use wangban::pipeline::WORKERS;

pub async fn run(
    services: Services,
    workers: Option<Vec<String>>,
    http_addr: Option<String>,
) -> anyhow::Result<ExitCode> {
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
    tracing::info!(
        workers = names.len(),
        embedded_bus = s.amqp_url.is_none(),
        "starting"
    );
    for worker in &names {
        tracing::info!(worker, "running worker");
    }
    let (_keep, never) = tokio::sync::watch::channel(false);
    if let Err(e) = wangban::serve::run(&s, &names, never).await {
        // The one line a log shipper must not drop: JSON like every other.
        tracing::error!(error = format!("{e:#}"), "wangban serve stopped");
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}
