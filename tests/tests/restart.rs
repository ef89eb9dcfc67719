//! Workers stopped mid-run (as by a crash) and started again: every case still completes, with
//! every effect once and every audit chain intact — on real RabbitMQ and PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::{Pipeline, WORKERS};
use wangban_tests::{RealServices, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_run_loses_nothing_and_repeats_nothing() {
    let env = RealServices::new("restart").await;
    let pipeline = Pipeline::connect(&env.settings).await.expect("connect");
    let store = pipeline.runtime.store.clone();
    let scenarios = [
        Scenario::PassportCourier,
        Scenario::PermitPickup,
        Scenario::TaiwanStolenCourier,
        Scenario::Under16,
        Scenario::ReviewRejected,
    ];
    let mut rng = Rng::new(11);
    let mut expected = BTreeMap::new();
    for n in 0..100 {
        let s = scenarios[n % scenarios.len()];
        let app = application("RESTART", n, s, &mut rng);
        expected.insert(
            app["application_id"].as_str().unwrap().to_owned(),
            s.expected(),
        );
        pipeline.submit(&app, false).await.unwrap();
    }
    let finished = |states: &BTreeMap<String, String>| {
        expected
            .iter()
            .filter(|(id, want)| states.get(*id).map(String::as_str) == Some(**want))
            .count()
    };

    let first = pipeline.spawn(&WORKERS).unwrap();
    eventually(Duration::from_secs(60), "some cases to finish", || async {
        finished(&store.states_by_application("RESTART").await.unwrap()) >= 10
    })
    .await;
    first.abort().await; // a crash: no graceful stop, in-flight deliveries go back to the queues
    let at_crash = finished(&store.states_by_application("RESTART").await.unwrap());
    assert!(
        at_crash < expected.len(),
        "the crash must come mid-run (all {at_crash} were done)"
    );

    let second = pipeline.spawn(&WORKERS).unwrap();
    eventually(
        Duration::from_secs(120),
        "every case to reach its expected state",
        || async {
            finished(&store.states_by_application("RESTART").await.unwrap()) == expected.len()
        },
    )
    .await;
    second.stop().await;

    let audit = store.verify_audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);
    assert_eq!(audit.cases, 100);
    let counts = store.count_by_state().await.unwrap();
    assert_eq!(
        store.effect_counts("shipment").await.unwrap(),
        counts["delivered"]
    );
    assert_eq!(
        pipeline.simulation.distinct_requests("shipment:") as i64,
        counts["delivered"]
    );
    assert_eq!(
        pipeline.simulation.distinct_requests("production:") as i64,
        counts["delivered"] + counts["collected"]
    );
    assert_eq!(
        store.effect_counts("document_invalidated").await.unwrap(),
        80
    );
    // (Workers are stopped: trailing events may still be queued, so no event accounting here.)
    let verified = wangban::verify::check(
        &store,
        &pipeline.topology.workers,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(verified.violations.is_empty(), "{:?}", verified.violations);
    env.cleanup(&pipeline).await;
}
