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
    // One line per party, each value a plain scalar (a log shipper indexes them as they are).
    let over_http: Vec<&str> = settings.parties.endpoints().map(|e| e.party).collect();
    for party in ["sms", "payment", "production", "courier"] {
        let reached = if over_http.contains(&party) {
            "http"
        } else {
            "simulated"
        };
        tracing::info!(party, reached, "party");
    }
    let running = pipeline.spawn(workers)?;

    let declaring = {
        let p = pipeline.clone();
        let own: Option<Vec<String>> = settings
            .declare_own
            .then(|| workers.iter().map(|w| w.to_string()).collect());
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(200);
            loop {
                let declared = match &own {
                    Some(names) => {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        p.declare_only(&names).await
                    }
                    None => p.declare().await,
                };
                match declared {
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

    // Retention: every hour, personal data past its keeping time is erased (any replica may; the
    // case row's lock and its erased mark make a second pass over a case do nothing).
    let retention = {
        let (store, keep) = (pipeline.runtime.store.clone(), settings.retention);
        let materials = settings.materials.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(3600));
            loop {
                tick.tick().await;
                if let Some(m) = &materials {
                    match crate::retention::erase_materials(&store, m.0.as_ref(), false).await {
                        Ok(e) if e.files > 0 => {
                            tracing::info!(
                                cases = e.cases,
                                files = e.files,
                                "retention erased uploaded materials"
                            );
                        }
                        Ok(_) => {}
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "retention of materials failed; trying again in an hour")
                        }
                    }
                }
                match store.erase_expired(keep, false).await {
                    Ok(e) if e.cases + e.dead_letters > 0 => {
                        tracing::info!(
                            cases = e.cases,
                            dead_letters = e.dead_letters,
                            "retention erased personal data"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "retention pass failed; trying again in an hour")
                    }
                }
            }
        })
    };
    let sampling = {
        let (store, every) = (pipeline.runtime.store.clone(), settings.sample_every);
        let nonce_memory = settings.parties.callback_keys().nonce_memory();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = store.sample_states().await {
                    tracing::warn!(error = %e, "cannot sample cases per state");
                }
                if let Err(e) = store.sweep_nonces(nonce_memory).await {
                    tracing::warn!(error = %e, "cannot forget old callback nonces");
                }
            }
        })
    };

    let state = app_state(settings, &pipeline);
    let listener = tokio::net::TcpListener::bind(&settings.http_addr)
        .await
        .with_context(|| format!("binding HTTP on {}", settings.http_addr))?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, operations_api = settings.operator_token.is_some(), "HTTP listening");
    if let Some(file) = &settings.http_addr_file {
        // Written whole, then renamed: a reader never sees half an address.
        let tmp = file.with_extension("tmp");
        std::fs::write(&tmp, bound.to_string())
            .and_then(|()| std::fs::rename(&tmp, file))
            .with_context(|| format!("writing WANGBAN_HTTP_ADDR_FILE {}", file.display()))?;
    }
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
    retention.abort();
    if !running.stop_within(settings.shutdown_deadline).await {
        tracing::warn!(
            deadline_s = settings.shutdown_deadline.as_secs(),
            "in-flight work abandoned at the shutdown deadline; the broker redelivers it"
        );
    }
    let _ = http_stop.send(true);
    let _ = http.await;
    pipeline.runtime.store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// GETs `url` (plain HTTP) and says whether it answered 200 within 5 s.
pub async fn probe(url: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(host).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(5), attempt).await,
        Ok(Some(true))
    )
}

/// What the HTTP handlers of `pipeline` share, from `settings`.
pub fn app_state(settings: &Settings, pipeline: &Pipeline) -> wangban_api::AppState {
    wangban_api::AppState {
        runtime: pipeline.runtime.clone(),
        topology: pipeline.topology.clone(),
        calendar: settings.calendar.clone(),
        review_working_days: settings.review_working_days,
        payment_window: settings.fees.payment_window,
        operator_token: settings
            .operator_token
            .as_ref()
            .map(|t| Arc::from(t.expose())),
        callbacks: settings.parties.callback_keys(),
        review_max_rounds: settings.review_max_rounds,
        hall_uncollected_after: settings.hall_uncollected_after,
        http_limits: settings.http_limits.clone(),
        http_stats: Default::default(),
        auth_failures: Arc::new(wangban_api::AuthFailures::new(
            settings.http_limits.auth_failures_per_minute,
        )),
        materials: settings.materials.as_ref().map(|m| m.0.clone()),
    }
}
