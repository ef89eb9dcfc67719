//! An event that arrives before what it follows, on RabbitMQ and PostgreSQL with a controlled
//! clock: it is put back behind what it follows for `early_wait` counted from the first time it
//! was put back — not from its creation, which in a deep backlog is long before its first
//! delivery — and dead-lettered, replayable, only once that has passed.

use serde_json::json;
use std::time::Duration;
use wangban::demo::{self, Rng, Scenario};
use wangban::pipeline::Pipeline;
use wangban_domain::clock::Clock;
use wangban_domain::events::EventType;
use wangban_tests::{RealServices, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_early_event_is_put_back_and_dead_lettered_only_after_its_wait() {
    let clock = Clock::controlled_now();
    let mut env = RealServices::new("early").await;
    env.settings.clock = clock.clone();
    let pipeline = Pipeline::connect(&env.settings).await.unwrap();
    let store = pipeline.runtime.store.clone();

    // A case accepted by intake, whose review has not begun (review is not running).
    let intake = pipeline.spawn(&["intake"]).unwrap();
    let app = demo::application("EARLY", 1, Scenario::Unpaid, &mut Rng::new(3));
    let case = pipeline.submit(&app, false).await.unwrap();
    eventually(
        Duration::from_secs(60),
        "intake to accept the case",
        || async { store.case_state(case.as_str()).await.unwrap().as_deref() == Some("accepted") },
    )
    .await;
    intake.stop().await;

    // Its payment, reported ten minutes ago (five times `early_wait`) and queued only now, as
    // behind a deep backlog: the case has not got there yet.
    let notify = pipeline.spawn(&["notify"]).unwrap();
    let then = Clock::controlled(clock.now_ms() - 600_000);
    let early = wangban_runtime::ingress::event(
        &then,
        EventType::PaymentReported,
        "/test/early",
        &case,
        None,
        json!({"payment_id": "PAY-EARLY", "gateway_order_id": null, "amount_cny": 120,
               "status": "succeeded"}),
    );
    let event_id = early.id.to_string();
    pipeline.runtime.queue_ingress(&early).await.unwrap();
    let put_back = || async {
        store
            .retries_of(case.as_str())
            .await
            .unwrap()
            .iter()
            .filter(|r| r.event_id == event_id && r.worker == "notify")
            .count()
    };
    eventually(
        Duration::from_secs(60),
        "the early payment to be put back twice",
        || async { put_back().await >= 2 },
    )
    .await;
    assert!(
        store.dead_letters(Some("notify")).await.unwrap().is_empty(),
        "an event put back for less than early_wait must not be dead-lettered"
    );
    assert_eq!(
        store.case_state(case.as_str()).await.unwrap().as_deref(),
        Some("accepted")
    );

    // Two minutes and a second after it was first put back: dead-lettered with its reason.
    clock.advance(pipeline.runtime.config.early_wait + Duration::from_secs(1));
    eventually(
        Duration::from_secs(60),
        "the still-early payment to be dead-lettered",
        || async {
            store
                .dead_letters(Some("notify"))
                .await
                .unwrap()
                .iter()
                .any(|d| d.reason.contains("has not got there yet"))
        },
    )
    .await;
    notify.stop().await;
    env.cleanup(&pipeline).await;
}
