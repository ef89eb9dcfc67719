//! Deliveries that arrive while a worker's transactions are busy share one commit, a savepoint
//! each; one that fails in a batch is undone to its savepoint and handled alone (here: refused
//! and dead-lettered), while the rest of its batch commits — on RabbitMQ + PostgreSQL and on the
//! embedded default (in-process bus, SQLite).

use std::time::Duration;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::Pipeline;
use wangban::settings::Settings;
use wangban_domain::events::EventType;
use wangban_domain::ids::{ApplicationId, CaseId};
use wangban_runtime::ingress;
use wangban_tests::{RealServices, eventually};

const VALID: usize = 24;
const BROKEN: usize = 3;

async fn batches_commit_together_and_a_failure_is_handled_alone(
    mut settings: Settings,
) -> Pipeline {
    // One transaction at a time: whatever is queued behind it forms the next batch.
    settings.runtime.concurrency = 1;
    settings.runtime.batch = 8;
    let pipeline = Pipeline::connect(&settings).await.expect("connect");
    let mut rng = Rng::new(11);
    // Everything is queued before intake runs. Every eighth event names a case other than its
    // application's: intake refuses it after the runtime has claimed it in the inbox.
    for n in 0..VALID {
        let app = application("BATCH", n, Scenario::PassportCourier, &mut rng);
        if n % 8 == 3 {
            let other = ApplicationId::parse(&format!("BATCH-OTHER-{n}")).unwrap();
            let event = ingress::event(
                pipeline.runtime.store.clock(),
                EventType::ApplicationSubmitted,
                "/portal",
                &CaseId::for_application(&other),
                None,
                app.clone(),
            );
            ingress::publish(pipeline.runtime.bus.as_ref(), &event)
                .await
                .expect("publish a refused submission");
        }
        pipeline.submit(&app, false).await.expect("submit");
    }
    let running = pipeline.spawn(&["intake"]).expect("spawn intake");
    let store = &pipeline.runtime.store;
    eventually(
        Duration::from_secs(60),
        "every valid application through intake and every refused one dead-lettered",
        || async {
            let states = store.count_by_state().await.unwrap_or_default();
            let through: i64 = ["accepted", "rejected"]
                .iter()
                .map(|s| states.get(*s).copied().unwrap_or(0))
                .sum();
            let dead = store.dead_letters(Some("intake")).await.unwrap_or_default();
            through == VALID as i64 && dead.len() == BROKEN
        },
    )
    .await;
    running.stop().await;

    let (transactions, deliveries) = pipeline.runtime.metrics.committed_total("intake");
    assert_eq!(
        deliveries, VALID as u64,
        "each valid submission committed once"
    );
    assert!(
        transactions < deliveries,
        "queued deliveries shared commits: {transactions} transactions for {deliveries}"
    );
    // The refused ones were undone in their batch (their inbox claim too) and handled alone.
    for dead in store.dead_letters(Some("intake")).await.unwrap() {
        assert!(
            dead.reason.contains("envelope subject is not the case"),
            "{}",
            dead.reason
        );
        assert_eq!(dead.failures, 1);
    }
    let states = store.count_by_state().await.unwrap();
    assert_eq!(states.values().sum::<i64>(), VALID as i64, "{states:?}");
    let report = store.verify_audit().await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    pipeline
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_rabbitmq_and_postgresql() {
    let env = RealServices::new("batches").await;
    let pipeline =
        batches_commit_together_and_a_failure_is_handled_alone(env.settings.clone()).await;
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_default() {
    let path = std::env::temp_dir().join(format!(
        "wangban-batches-{}.sqlite",
        uuid::Uuid::new_v4().simple()
    ));
    let mut settings = Settings::from_env("unused").expect("settings");
    settings.database_url = format!("sqlite://{}", path.display());
    settings.amqp_url = None;
    let pipeline = batches_commit_together_and_a_failure_is_handled_alone(settings).await;
    pipeline.runtime.store.close().await;
    let _ = std::fs::remove_file(path);
}
