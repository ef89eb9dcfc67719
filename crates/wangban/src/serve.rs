//! `wangban serve`: workers, relay, timers, the state sampler and the HTTP surface in one process.
//! The broker may be away at start: the topology is declared in the background with backoff, and
//! `/readyz` says not ready until it is.

use crate::pipeline::Pipeline;
use crate::settings::Settings;
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Runs until SIGINT/SIGTERM (or `stop` turns true), then stops gracefully.
pub async fn run(
    settings: &Settings,
    workers: &[&str],
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let pipeline = Pipeline::open(settings).await?;
    let running = pipeline.spawn(workers)?;

    let declaring = {
        let p = pipeline.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                match p.declare().await {
                    Ok(()) => {
                        tracing::info!("bus topology declared");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot declare the bus topology yet; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(10));
                    }
                }
            }
        })
    };

    let sampling = {
        let (store, every) = (pipeline.runtime.store.clone(), settings.sample_every);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = store.sample_states().await {
                    tracing::warn!(error = %e, "cannot sample cases per state");
                }
            }
        })
    };

    let state = wangban_api::AppState {
        runtime: pipeline.runtime.clone(),
        topology: pipeline.topology.clone(),
        calendar: settings.calendar.clone(),
        review_working_days: settings.review_working_days,
        payment_window: settings.fees.payment_window,
        operator_token: settings
            .operator_token
            .as_ref()
            .map(|t| Arc::from(t.expose())),
    };
    let listener = tokio::net::TcpListener::bind(&settings.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", settings.http_addr))?;
    tracing::info!(addr = %listener.local_addr()?, operations_api = settings.operator_token.is_some(), "HTTP listening");
    let (http_stop, mut http_rx) = watch::channel(false);
    let http = tokio::spawn(wangban_api::serve(state, listener, async move {
        let _ = http_rx.changed().await;
    }));

    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    #[cfg(unix)]
    let terminated = term.recv();
    #[cfg(not(unix))]
    let terminated = std::future::pending::<Option<()>>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminated => {}
        _ = stop.changed() => {}
    }
    tracing::info!("stopping: finishing in-flight deliveries and flushing the outbox");
    declaring.abort();
    sampling.abort();
    running.stop().await;
    let _ = http_stop.send(true);
    let _ = http.await;
    pipeline.runtime.store.close().await;
    tracing::info!("stopped");
    Ok(())
}
