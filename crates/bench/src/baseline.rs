//! The baseline: what the broker alone does with wangban's message pattern — a chain of `hops`
//! quorum queues, messages of wangban's mean event size, and at each hop a consumer (manual
//! acks, the same prefetch and concurrency as a wangban worker) that publishes the message on
//! with a publisher confirm and acks only after the confirm. No database, no handler.

use crate::run::Side;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connect, Connection, ConnectionProperties};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wangban::settings::Settings;
use wangban_bus::{Bus, Outgoing, Topology, WorkerQueue};
use wangban_runtime::RuntimeConfig;

async fn connect(url: &str, settings: &Settings) -> anyhow::Result<Connection> {
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: settings.amqp_ca_pem()?,
    };
    let props = ConnectionProperties::default().with_connection_name("wangban-bench".into());
    // The same frame size as wangban's own connections.
    let uri = wangban_bus::amqp::connection_uri(url)?;
    Ok(uri
        .connect_with_config(props, tls, lapin::runtime::default_runtime()?)
        .await?)
}

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// `messages` messages of `size` bytes through `hops` quorum queues on the broker at `url`.
pub async fn lapin_chain(
    url: &str,
    prefix: &str,
    messages: usize,
    hops: usize,
    size: usize,
    settings: &Settings,
) -> anyhow::Result<Side> {
    let queue = |i: usize| format!("{prefix}baseline.{i}");
    let admin = connect(url, settings).await?;
    let ch = admin.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    let durable = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for i in 0..hops {
        ch.queue_declare(queue(i).into(), durable, args.clone())
            .await?;
    }

    // One connection per hop, as separate worker processes would have.
    let arrived = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let mut stages = Vec::new();
    let mut channels = Vec::new();
    for i in 0..hops {
        let conn = connect(url, settings).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        ch.basic_qos(settings.runtime.prefetch, BasicQosOptions::default())
            .await?;
        let consumer = ch
            .basic_consume(
                queue(i).into(),
                format!("baseline-{i}").into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        channels.push(ch.clone());
        let next = (i + 1 < hops).then(|| queue(i + 1));
        let (arrived, done) = (arrived.clone(), done.clone());
        let concurrency = settings.runtime.concurrency.max(1);
        stages.push(tokio::spawn(stage(
            conn,
            ch,
            consumer,
            next,
            concurrency,
            move || {
                if arrived.fetch_add(1, Ordering::Relaxed) + 1 == messages {
                    done.notify_one();
                }
            },
        )));
    }

    // The load: every message published (confirmed, pipelined in batches) as fast as it goes.
    let payload = vec![b'x'; size];
    let started = Instant::now();
    let publisher = admin.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let mut sent = 0;
    while sent < messages {
        let n = 200.min(messages - sent);
        let mut confirms = Vec::with_capacity(n);
        for _ in 0..n {
            confirms.push(
                publisher
                    .basic_publish(
                        "".into(),
                        queue(0).into(),
                        BasicPublishOptions::default(),
                        &payload,
                        persistent(),
                    )
                    .await?,
            );
        }
        for c in confirms {
            anyhow::ensure!(c.await?.is_ack(), "the broker refused a baseline message");
        }
        sent += n;
    }
    let mut last_line = Instant::now();
    loop {
        let got = arrived.load(Ordering::Relaxed);
        if got >= messages {
            break;
        }
        if last_line.elapsed() > Duration::from_millis(500) {
            wangban::progress::show(&format!(
                "[bench] baseline: {got}/{messages} messages through {hops} hops, {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            last_line = Instant::now();
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the baseline did not finish within 10 minutes ({got}/{messages})"
        );
        tokio::select! {
            _ = done.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    wangban::progress::show(&format!(
        "[bench] baseline: {messages}/{messages} messages through {hops} hops, {seconds:.1} s"
    ));
    wangban::progress::end();
    // Closing each stage's channel ends its consumer; the stage then closes its connection.
    for c in &channels {
        let _ = c.close(200, "baseline done".into()).await;
    }
    for s in stages {
        let abort = s.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), s)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    for i in 0..hops {
        let _ = ch
            .queue_delete(queue(i).into(), QueueDeleteOptions::default())
            .await;
    }
    let _ = admin.close(200, "baseline done".into()).await;
    let hops_total = (messages * hops) as u64;
    Ok(Side {
        seconds,
        hops: hops_total,
        hops_per_s: hops_total as f64 / seconds,
    })
}

/// One hop: consume, publish on (confirmed), then ack — `concurrency` deliveries at once.
async fn stage(
    conn: Connection,
    ch: Channel,
    mut consumer: lapin::Consumer,
    next: Option<String>,
    concurrency: usize,
    arrived: impl Fn() + Send + Sync + 'static,
) {
    let arrived = Arc::new(arrived);
    let mut in_flight = tokio::task::JoinSet::new();
    while let Some(Ok(delivery)) = consumer.next().await {
        while in_flight.len() >= concurrency {
            in_flight.join_next().await;
        }
        let (ch, next, arrived) = (ch.clone(), next.clone(), arrived.clone());
        in_flight.spawn(async move {
            if let Some(next) = next {
                let confirm = ch
                    .basic_publish(
                        "".into(),
                        next.into(),
                        BasicPublishOptions::default(),
                        &delivery.data,
                        persistent(),
                    )
                    .await;
                let confirmed = match confirm {
                    Ok(c) => c.await.is_ok_and(|c| c.is_ack()),
                    Err(_) => false,
                };
                if !confirmed {
                    return; // not acked: the broker redelivers it
                }
            } else {
                arrived();
            }
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        });
    }
    while in_flight.join_next().await.is_some() {}
    let _ = conn.close(200, "baseline done".into()).await;
}

/// The same chain on the in-process bus (for `--embedded`).
pub async fn in_process(
    messages: usize,
    hops: usize,
    size: usize,
    config: &RuntimeConfig,
) -> anyhow::Result<Side> {
    let bus = Arc::new(wangban_bus::memory::MemoryBus::new());
    let topology = Topology {
        prefix: String::new(),
        workers: (0..hops)
            .map(|i| WorkerQueue {
                worker: format!("stage{i}"),
                bindings: vec![format!("baseline.{i}")],
                ..Default::default()
            })
            .collect(),
        delivery_limit: 20,
        ..Default::default()
    };
    bus.declare(&topology).await?;
    let arrived = Arc::new(AtomicUsize::new(0));
    let mut stages = Vec::new();
    for i in 0..hops {
        let mut sub = bus.subscribe(&format!("stage{i}"), config.prefetch).await?;
        let (bus, arrived) = (bus.clone(), arrived.clone());
        stages.push(tokio::spawn(async move {
            while let Some(Ok(d)) = sub.next().await {
                if i + 1 < hops {
                    let out = Outgoing {
                        routing_key: format!("baseline.{}", i + 1),
                        message_id: String::new(),
                        payload: d.payload.clone(),
                        traceparent: None,
                    };
                    if bus.publish(&[out]).await.is_err() {
                        continue;
                    }
                } else {
                    arrived.fetch_add(1, Ordering::Relaxed);
                }
                let _ = d.ack().await;
            }
        }));
    }
    let started = Instant::now();
    let payload = vec![b'x'; size];
    for chunk in (0..messages).collect::<Vec<_>>().chunks(200) {
        let out: Vec<Outgoing> = chunk
            .iter()
            .map(|_| Outgoing {
                routing_key: "baseline.0".into(),
                message_id: String::new(),
                payload: payload.clone(),
                traceparent: None,
            })
            .collect();
        bus.publish(&out).await?;
    }
    while arrived.load(Ordering::Relaxed) < messages {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "the in-process baseline did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    for s in stages {
        s.abort();
    }
    let hops_total = (messages * hops) as u64;
    Ok(Side {
        seconds,
        hops: hops_total,
        hops_per_s: hops_total as f64 / seconds,
    })
}
