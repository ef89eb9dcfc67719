//! Deliveries that arrive while a worker's transactions are busy share one commit, a savepoint
//! each; one that fails in a batch is undone to its savepoint and handled alone (here: refused
//! and dead-lettered), while the rest of its batch commits; one that is early is tried again in
//! the same transaction once a later delivery of its case is handled — on RabbitMQ + PostgreSQL
//! and on the embedded default (in-process bus, SQLite).

use std::time::Duration;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::Pipeline;
use wangban::settings::Settings;
use wangban_domain::effects::{Effect, EffectReport, Outcome, Party};
use wangban_domain::events::EventType;
use wangban_domain::ids::{ApplicationId, CaseId};
use wangban_domain::lifecycle::State;
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

/// A payment reported before the payment order's answer, both in one batch: the payment is
/// early, undone to its savepoint, and handled in the same transaction right after the answer.
async fn an_early_delivery_goes_through_in_its_batch_after_what_it_follows(
    settings: Settings,
) -> Pipeline {
    let pipeline = Pipeline::connect(&settings).await.expect("connect");
    let store = &pipeline.runtime.store;
    let clock = store.clock().clone();
    // A case approved, its payment order asked for.
    let app_id = "BATCH-EARLY-1";
    let case = CaseId::for_application(&ApplicationId::parse(app_id).unwrap());
    let app = application(app_id, 1, Scenario::PassportCourier, &mut Rng::new(5));
    let mut tx = store.begin().await.unwrap();
    let new = wangban_store::NewCase {
        case_id: case.clone(),
        application_id: app_id.into(),
        id_fingerprint: Some("fp-batch-early".into()),
        document_kind: Some("passport".into()),
        delivery_method: "courier".into(),
        application: app.to_string(),
    };
    tx.insert_case(&new, true, "evt_batch_early").await.unwrap();
    let record = tx.load_case(&case).await.unwrap().unwrap();
    tx.set_state(&record, State::Approved, 1, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let fee = settings.fees.fee(None);
    let paid = ingress::event(
        &clock,
        EventType::PaymentReported,
        "/test/payment",
        &case,
        None,
        serde_json::json!({"payment_id": "PAY-1", "gateway_order_id": "ORDER-1",
                           "amount_cny": fee, "status": "succeeded"}),
    );
    let report = EffectReport {
        purpose: "payment_order".into(),
        command: Effect::PaymentOrder { amount_cny: fee },
        outcome: Outcome::Done {
            result: serde_json::json!({"gateway_order_id": "ORDER-1"}),
        },
    };
    let ordered = ingress::event(
        &clock,
        EventType::EffectDone(Party::Payment),
        "/wangban/effects/payment",
        &case,
        None,
        serde_json::to_value(&report).unwrap(),
    );
    for event in [&paid, &ordered] {
        ingress::publish(pipeline.runtime.bus.as_ref(), event)
            .await
            .unwrap();
    }
    let mut sub = pipeline.runtime.bus.subscribe("notify", 8).await.unwrap();
    let mut batch = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(30), sub.next()).await;
        batch.push(
            next.expect("a delivery")
                .expect("open")
                .expect("a delivery"),
        );
    }
    let keys: Vec<&str> = batch.iter().map(|d| d.routing_key.as_str()).collect();
    assert_eq!(keys, ["payment.reported", "effect.payment.done"]);

    let notify = pipeline.handler("notify").unwrap();
    pipeline.runtime.process_together(notify, batch).await;
    assert_eq!(
        store.case_state(case.as_str()).await.unwrap().as_deref(),
        Some("paid")
    );
    assert_eq!(
        pipeline.runtime.metrics.committed_total("notify"),
        (1, 2),
        "both deliveries committed by one transaction"
    );
    let audit = store.audit_of(case.as_str()).await.unwrap();
    let steps: Vec<String> = audit
        .iter()
        .filter(|r| r.kind == "transition")
        .filter_map(|r| serde_json::from_str::<serde_json::Value>(&r.detail).ok())
        .map(|d| d["to"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(steps, ["awaiting_payment", "paid"]);
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
async fn early_on_rabbitmq_and_postgresql() {
    let env = RealServices::new("batch-early").await;
    let pipeline =
        an_early_delivery_goes_through_in_its_batch_after_what_it_follows(env.settings.clone())
            .await;
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_on_the_embedded_default() {
    on_embedded(
        "batch-early",
        an_early_delivery_goes_through_in_its_batch_after_what_it_follows,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_default() {
    on_embedded(
        "batches",
        batches_commit_together_and_a_failure_is_handled_alone,
    )
    .await;
}

/// Runs `check` on the embedded default (in-process bus, SQLite in a file of its own).
async fn on_embedded<F, Fut>(name: &str, check: F)
where
    F: FnOnce(Settings) -> Fut,
    Fut: std::future::Future<Output = Pipeline>,
{
    let path = std::env::temp_dir().join(format!(
        "wangban-{name}-{}.sqlite",
        uuid::Uuid::new_v4().simple()
    ));
    let mut settings = Settings::from_env("unused").expect("settings");
    settings.database_url = format!("sqlite://{}", path.display());
    settings.amqp_url = None;
    let pipeline = check(settings).await;
    pipeline.runtime.store.close().await;
    let _ = std::fs::remove_file(path);
}
