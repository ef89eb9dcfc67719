//! Redelivery has no second effect; malformed messages are dead-lettered with their reason and
//! nothing is lost — on real RabbitMQ and PostgreSQL, stepping the worker one delivery at a time.

use std::time::Duration;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::Pipeline;
use wangban_domain::events::EventType;
use wangban_domain::ids::{ApplicationId, CaseId};
use wangban_runtime::{Outcome, ingress};
use wangban_tests::{RealServices, eventually};

fn case_of(app: &serde_json::Value) -> CaseId {
    CaseId::for_application(&ApplicationId::parse(app["application_id"].as_str().unwrap()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_message_twice_has_one_effect() {
    let env = RealServices::new("redelivery").await;
    let pipeline = Pipeline::connect(&env.settings).await.expect("connect");
    let rt = &pipeline.runtime;
    let app = application("REDEL", 1, Scenario::PassportCourier, &mut Rng::new(3));
    let case = case_of(&app);
    let event = ingress::event(
        pipeline.runtime.store.clock(),
        EventType::ApplicationSubmitted,
        "/portal",
        &case,
        None,
        app.clone(),
    );
    // The broker delivers the same message twice (a redelivery after a lost ack) …
    ingress::publish(rt.bus.as_ref(), &event).await.unwrap();
    ingress::publish(rt.bus.as_ref(), &event).await.unwrap();
    // … and the portal sends the same application again under a new event id.
    pipeline.submit(&app, false).await.unwrap();

    let intake = pipeline.handler("intake").unwrap();
    let mut sub = rt.bus.subscribe("intake", 10).await.unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..3 {
        let d = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("a delivery")
            .unwrap()
            .unwrap();
        outcomes.push(rt.process(intake.as_ref(), d).await);
    }
    assert_eq!(
        outcomes,
        vec![Outcome::Handled, Outcome::Duplicate, Outcome::Handled]
    );

    let view = rt
        .store
        .case_view(case.as_str())
        .await
        .unwrap()
        .expect("one case");
    assert_eq!(view.case.state.as_str(), "accepted");
    let kinds: Vec<&str> = view.audit.iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec![
            "case_opened",
            "transition",
            "document_invalidated",
            "duplicate_submission"
        ]
    );
    assert_eq!(
        rt.store
            .effect_counts("document_invalidated")
            .await
            .unwrap(),
        1
    );

    // Exactly one case.accepted and one document.invalidated leave through the outbox.
    assert_eq!(rt.relay_once().await.unwrap(), 2);
    eventually(
        Duration::from_secs(10),
        "the events to reach their queues",
        || async {
            rt.bus.depth("review", false).await.unwrap() == 1
                && rt.bus.depth("notify", false).await.unwrap() == 1
        },
    )
    .await;
    assert_eq!(
        rt.relay_once().await.unwrap(),
        0,
        "a second relay publishes nothing"
    );
    drop(sub);
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_dead_lettered_with_their_reason() {
    let env = RealServices::new("refusals").await;
    let pipeline = Pipeline::connect(&env.settings).await.expect("connect");
    let rt = &pipeline.runtime;

    // 1. not JSON at all
    pipeline
        .submit_raw("application.submitted", b"\xff\xfe not json".to_vec())
        .await
        .unwrap();
    // 2. a well-formed envelope around an application without a phone number
    let mut app = application("REFUSE", 1, Scenario::PassportCourier, &mut Rng::new(4));
    app["applicant"].as_object_mut().unwrap().remove("phone");
    pipeline.submit(&app, false).await.unwrap();
    // 3. an envelope of a version this build does not know
    let good = application("REFUSE", 2, Scenario::PassportCourier, &mut Rng::new(5));
    let mut v2 = ingress::event(
        pipeline.runtime.store.clock(),
        EventType::ApplicationSubmitted,
        "/portal",
        &case_of(&good),
        None,
        good.clone(),
    );
    v2.event_type = "wangban.application.submitted.v2".into();
    pipeline
        .submit_raw("application.submitted", v2.encode())
        .await
        .unwrap();
    // 4. a message over the size limit
    let mut huge = good.clone();
    huge["padding"] = serde_json::json!("x".repeat(rt.config.max_message_bytes));
    pipeline.submit(&huge, false).await.unwrap();

    let running = pipeline.spawn(&["intake"]).unwrap();
    eventually(Duration::from_secs(20), "four dead letters", || async {
        rt.store.dead_letters(Some("intake")).await.unwrap().len() == 4
    })
    .await;
    running.stop().await;

    let mut reasons: Vec<String> = rt
        .store
        .dead_letters(Some("intake"))
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.reason)
        .collect();
    reasons.sort();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("refused: envelope is not valid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r == "malformed application: applicant.phone: is required"),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("wangban.application.submitted.v2")
                && r.contains("unsupported version")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("exceeds the limit")),
        "{reasons:?}"
    );
    // Kept in the worker's dead-letter queue too, and nothing is left in (or lost from) the queue.
    assert_eq!(rt.bus.depth("intake", true).await.unwrap(), 4);
    assert_eq!(rt.bus.depth("intake", false).await.unwrap(), 0);
    assert!(
        rt.store.count_by_state().await.unwrap().is_empty(),
        "no case was opened"
    );
    // No dead-letter reason quotes the personal data of the application.
    let phone_free = rt.store.dead_letters(None).await.unwrap();
    let id_number = good["applicant"]["id_number"].as_str().unwrap();
    assert!(phone_free.iter().all(|d| !d.reason.contains(id_number)));
    env.cleanup(&pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_stops_at_the_broker_delivery_limit() {
    let mut env = RealServices::new("poison").await;
    env.settings.delivery_limit = 3;
    let pipeline = Pipeline::connect(&env.settings).await.expect("connect");
    let bus = pipeline.runtime.bus.clone();
    bus.send_to_queue("review", b"a message every attempt gives back")
        .await
        .unwrap();
    // A consumer that fails and gives the message back, forever.
    let mut sub = bus.subscribe("review", 1).await.unwrap();
    let mut deliveries = 0;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(Duration::from_secs(3), sub.next()).await {
        deliveries += 1;
        assert!(
            deliveries <= 10,
            "the broker keeps redelivering a poison message"
        );
        d.requeue().await.unwrap();
    }
    assert!(
        (3..=4).contains(&deliveries),
        "delivered {deliveries} times with a limit of 3"
    );
    eventually(
        Duration::from_secs(10),
        "the poison message in the dead-letter queue",
        || async {
            bus.depth("review", true).await.unwrap() == 1
                && bus.depth("review", false).await.unwrap() == 0
        },
    )
    .await;
    drop(sub);
    env.cleanup(&pipeline).await;
}

/// Runs the intake worker until it has dead-lettered `dead` messages and opened `cases` cases of
/// the `UNKNOWN` applications, then stops it.
async fn intake_until(pipeline: &Pipeline, dead: usize, cases: usize) {
    let running = pipeline.spawn(&["intake"]).unwrap();
    let store = &pipeline.runtime.store;
    eventually(
        Duration::from_secs(20),
        &format!("{dead} dead letters and {cases} cases"),
        || async {
            store.dead_letters(Some("intake")).await.unwrap().len() == dead
                && store.states_by_application("UNKNOWN").await.unwrap().len() == cases
        },
    )
    .await;
    running.stop().await;
}

/// Unknown fields: ignored by default (the portal may extend the contract compatibly); with
/// `WANGBAN_UNKNOWN_FIELDS=refuse` the application is dead-lettered naming every unknown field,
/// and no case is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_when_configured() {
    let mut env = RealServices::new("unknown").await;
    env.settings.refuse_unknown_fields = true;
    let pipeline = Pipeline::connect(&env.settings).await.expect("connect");
    let rt = &pipeline.runtime;
    let mut extended = application("UNKNOWN", 1, Scenario::PassportCourier, &mut Rng::new(8));
    extended["portal_extension"] = serde_json::json!({"channel": "app"});
    extended["applicant"]["nickname"] = serde_json::json!("x");
    pipeline.submit(&extended, false).await.unwrap();
    let plain = application("UNKNOWN", 2, Scenario::PassportCourier, &mut Rng::new(9));
    pipeline.submit(&plain, false).await.unwrap();

    intake_until(&pipeline, 1, 1).await;
    let dead = rt.store.dead_letters(Some("intake")).await.unwrap();
    assert_eq!(
        dead[0].reason,
        "malformed application: applicant.nickname: unknown field; portal_extension: unknown field"
    );
    let states = rt.store.states_by_application("UNKNOWN").await.unwrap();
    assert!(
        states.contains_key(plain["application_id"].as_str().unwrap()),
        "{states:?}"
    );
    env.cleanup(&pipeline).await;

    // The default: the same extended application opens a case.
    let env = RealServices::new("unknown-default").await;
    let pipeline = Pipeline::connect(&env.settings).await.expect("connect");
    pipeline.submit(&extended, false).await.unwrap();
    intake_until(&pipeline, 0, 1).await;
    let rt = &pipeline.runtime;
    assert!(
        rt.store
            .dead_letters(Some("intake"))
            .await
            .unwrap()
            .is_empty()
    );
    env.cleanup(&pipeline).await;
}
