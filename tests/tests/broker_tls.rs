//! RabbitMQ over TLS: the whole pipeline runs on an `amqps://` broker whose certificate is issued
//! by a private CA (`WANGBAN_AMQP_CA_FILE`), and the client refuses a broker it cannot verify.
//! `scripts/test.sh` gives the local broker a TLS listener (`scripts/broker-tls.sh`); without one
//! these tests fail, never skip.

use std::path::PathBuf;
use wangban::demo;
use wangban_bus::amqp::AmqpBus;
use wangban_bus::{Bus, Topology};
use wangban_tests::RealServices;

fn amqps() -> (String, PathBuf) {
    let url = std::env::var("WANGBAN_TEST_AMQPS_URL").expect(
        "WANGBAN_TEST_AMQPS_URL is not set: run the tests with `bash scripts/test.sh`, which gives \
         the local RabbitMQ a TLS listener, or point it at a TLS broker",
    );
    let ca = std::env::var("WANGBAN_TEST_AMQP_CA_FILE")
        .expect("WANGBAN_TEST_AMQP_CA_FILE (the PEM of the broker's CA) is not set");
    (url, ca.into())
}

fn topology(prefix: &str) -> Topology {
    Topology {
        prefix: prefix.into(),
        workers: vec![],
        delivery_limit: 5,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_amqps_with_a_private_ca() {
    let (url, ca) = amqps();
    assert!(url.starts_with("amqps://"), "{url} is not an amqps URL");
    let mut env = RealServices::new("tls").await;
    env.settings.amqp_url = Some(url);
    env.settings.amqp_ca_file = Some(ca);
    let (pipeline, report) = demo::run(&env.settings, 40, 11, false)
        .await
        .expect("the demo runs over amqps://");
    assert_eq!(report.cases, 40);
    assert!(report.unexpected.is_empty(), "{:?}", report.unexpected);
    assert!(
        report.by_state.get("delivered").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_state
    );
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_whose_certificate_cannot_be_verified_is_refused() {
    let (url, ca) = amqps();
    let t = topology("test-tls-refused.");

    // The system's roots alone do not know the private CA: the handshake fails.
    let err = AmqpBus::new(&url, t.clone())
        .ping()
        .await
        .expect_err("an unverifiable broker certificate must be refused");
    let msg = err.to_string().to_lowercase();
    assert!(
        msg.contains("certificate") || msg.contains("issuer"),
        "expected a certificate error, got: {err}"
    );

    // A name the certificate does not carry is refused even with the right CA.
    let pem = std::fs::read_to_string(&ca).expect("read the CA file");
    let wrong_name = url.replace("127.0.0.1", "127.0.0.2");
    assert_ne!(wrong_name, url, "the test expects a URL on 127.0.0.1");
    let err = AmqpBus::new(&wrong_name, t.clone())
        .with_ca_pem(pem.clone())
        .ping()
        .await
        .expect_err("a certificate for another name must be refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "expected a name mismatch, got: {err}"
    );

    // With the CA, the same URL works: declare, publish confirmed, tear down.
    let bus = AmqpBus::new(&url, t.clone()).with_ca_pem(pem);
    bus.ping()
        .await
        .expect("amqps with the private CA connects");
    bus.declare(&t).await.expect("declare over TLS");
    bus.teardown(&t).await.expect("teardown over TLS");
}
