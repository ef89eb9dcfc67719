//! The frame size wangban proposes to RabbitMQ: small frames keep lapin's per-connection buffers
//! small (docs/performance.md), and a message larger than a frame still arrives whole.

use lapin::{Connect, ConnectionProperties};
use wangban_bus::amqp::{AmqpBus, FRAME_MAX, connection_uri};
use wangban_bus::{Bus, Topology, WorkerQueue};
use wangban_tests::amqp_url;

async fn negotiated(url: &str) -> u32 {
    let connection = connection_uri(url)
        .expect("the broker URL parses")
        .connect_with_config(
            ConnectionProperties::default(),
            Default::default(),
            lapin::runtime::default_runtime().expect("a runtime"),
        )
        .await
        .expect("the broker accepts the connection");
    let frame_max = connection.configuration().frame_max();
    let _ = connection.close(200, "done".into()).await;
    frame_max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_agrees_to_our_frame_size_unless_the_url_names_one() {
    let url = amqp_url();
    assert_eq!(negotiated(&url).await, FRAME_MAX);
    let sep = if url.contains('?') { '&' } else { '?' };
    assert_eq!(negotiated(&format!("{url}{sep}frame_max=8192")).await, 8192);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_many_frames_long_arrives_whole() {
    let prefix = format!(
        "test-frames-{}.",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let topology = Topology {
        prefix,
        workers: vec![WorkerQueue {
            worker: "frames".into(),
            ..Default::default()
        }],
        delivery_limit: 5,
        ..Default::default()
    };
    let bus = AmqpBus::new(&amqp_url(), topology.clone());
    bus.declare(&topology).await.expect("declare");
    // Ten frames' worth and a few bytes more, every byte different from its neighbours.
    let payload: Vec<u8> = (0..FRAME_MAX as usize * 10 + 7)
        .map(|i| (i % 251) as u8)
        .collect();
    bus.send_to_queue("frames", &payload).await.expect("send");
    let mut sub = bus.subscribe("frames", 1).await.expect("subscribe");
    let delivery = tokio::time::timeout(std::time::Duration::from_secs(30), sub.next())
        .await
        .expect("a delivery within 30 s")
        .expect("the subscription is open")
        .expect("a delivery");
    assert_eq!(delivery.payload.len(), payload.len());
    assert!(delivery.payload == payload, "the bytes differ");
    delivery.ack().await.expect("ack");
    drop(sub);
    bus.teardown(&topology).await.expect("teardown");
}
