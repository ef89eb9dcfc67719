//! `wangban demo`: generated applications of every scenario through the whole pipeline.

use super::{Services, init_logs, settings};
use std::io::Write;
use std::process::ExitCode;
use wangban::demo;
use wangban::pipeline::WORKERS;

pub async fn run(
    services: Services,
    cases: usize,
    seed: u64,
    json: bool,
    external: bool,
) -> anyhow::Result<ExitCode> {
    // The demo refuses malformed applications on purpose: only errors interrupt its table.
    init_logs("error");
    let default_db = format!(
        "sqlite://{}",
        std::env::temp_dir()
            .join(format!("wangban-demo-{}.sqlite", std::process::id()))
            .display()
    );
    let mut s = settings(&services, &default_db)?;
    if external {
        return run_external(s, cases, seed, json).await;
    }
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
    // The applicants upload real files: without a materials store of the environment's, into a
    // directory beside the demo's database, where intake checks them.
    if s.materials.is_none() {
        let dir =
            std::env::temp_dir().join(format!("wangban-demo-{}-materials", std::process::id()));
        s.materials = Some(wangban::settings::MaterialsStore(std::sync::Arc::new(
            wangban_materials::LocalDir::new(dir),
        )));
    }
    // Nor 3 working days for a late production order: the demo's workers read a clock it moves
    // forward once every other case has ended (see `wangban::demo::drive`).
    s.clock = wangban_domain::clock::Clock::controlled_now();
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
    print_report(&pipeline, &report, json, true).await
}

/// `--external`: only the portal and the applicants, against workers running elsewhere on the
/// same broker and database (the compose stack, a deployment); their settings rule, and this
/// process must be given the same (payment and correction windows) to know how long to wait.
async fn run_external(
    s: wangban::settings::Settings,
    cases: usize,
    seed: u64,
    json: bool,
) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        s.amqp_url.is_some(),
        "--external drives workers running elsewhere: set AMQP_URL (and DATABASE_URL) to theirs"
    );
    eprintln!("wangban demo: {cases} applications to the workers on RabbitMQ");
    let pipeline = wangban::pipeline::Pipeline::connect_as_portal(&s).await?;
    let report = demo::drive(&pipeline, &s, cases, seed, true, None).await?;
    print_report(&pipeline, &report, json, false).await
}

async fn print_report(
    pipeline: &wangban::pipeline::Pipeline,
    report: &demo::Report,
    json: bool,
    workers_here: bool,
) -> anyhow::Result<ExitCode> {
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
    if workers_here {
        writeln!(
            out,
            "\n{:<12} {:>10} {:>10} {:>12}",
            "worker", "deliveries", "mean ms", "p99 ≤ ms"
        )?;
    }
    for w in WORKERS.iter().filter(|_| workers_here) {
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
