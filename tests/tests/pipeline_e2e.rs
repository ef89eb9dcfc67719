//! The whole pipeline on real RabbitMQ and PostgreSQL: 200 mixed applications, every final state
//! as its scenario expects, every audit chain intact, every effect once, and the demo's report
//! naming every scenario.

use wangban::demo;
use wangban_tests::RealServices;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mixed_applications_reach_their_expected_states() {
    let mut env = RealServices::new("e2e").await;
    // Short enough that the demo drives an unanswered correction to its lapse.
    env.settings.resubmit_within = std::time::Duration::from_secs(12);
    // A clock the demo moves past the production promise once every other case has ended.
    env.settings.clock = wangban_domain::clock::Clock::controlled_now();
    let (pipeline, report) = demo::run(&env.settings, 200, 7, false)
        .await
        .expect("demo runs");
    assert_eq!(report.cases, 200);
    for s in demo::Scenario::ALL {
        let count = report.scenarios[s.name()];
        assert!(count.cases > 0, "{}: {:?}", s.name(), report.scenarios);
        assert_eq!(count.unexpected, 0, "{}", s.name());
    }
    assert_eq!(
        report.scenarios.values().map(|c| c.cases).sum::<usize>(),
        200
    );
    assert!(
        report.unexpected.is_empty(),
        "unexpected outcomes: {:?}",
        report.unexpected
    );
    for state in [
        "delivered",
        "collected",
        "rejected",
        "review_rejected",
        "payment_expired",
    ] {
        assert!(
            report.by_state.get(state).copied().unwrap_or(0) > 0,
            "no case ended {state}: {:?}",
            report.by_state
        );
    }

    let store = &pipeline.runtime.store;
    let audit = store.verify_audit().await.expect("verify");
    assert!(
        audit.problems.is_empty(),
        "broken chains: {:?}",
        audit.problems
    );
    assert!(
        audit.records > 1000,
        "expected a rich audit log, got {} records",
        audit.records
    );

    // Every case ended: no deadline is left waiting (a paid case's payment window and an
    // answered correction's lapse were cancelled as the case moved on, the others fired).
    let (waiting, _) = store.scheduled_backlog().await.unwrap();
    assert_eq!(waiting, 0, "deadlines left after every case ended");

    // The late orders are late on the record, and only they.
    let late = store.late_productions().await.unwrap();
    assert_eq!(
        late.len(),
        report.scenarios["late_production"].cases,
        "{late:?}"
    );

    // Effects: exactly one invalidation per accepted case, one shipment per delivered case.
    let counts = store.count_by_state().await.expect("counts");
    let accepted_ever: i64 = [
        "delivered",
        "collected",
        "ready_for_pickup",
        "review_rejected",
        "correction_lapsed",
        "payment_expired",
    ]
    .iter()
    .map(|s| counts.get(*s).copied().unwrap_or(0))
    .sum();
    assert_eq!(
        store.effect_counts("document_invalidated").await.unwrap(),
        accepted_ever
    );
    // A document the courier brought back was shipped too (then collected at the hall).
    let returned = report.scenarios["courier_returned"].cases as i64;
    assert!(returned > 0, "{:?}", report.scenarios);
    assert_eq!(
        store.effect_counts("shipment").await.unwrap(),
        counts["delivered"] + returned
    );
    assert_eq!(
        store.effect_counts("pickup_notice").await.unwrap(),
        counts["collected"] + counts["ready_for_pickup"]
    );
    assert_eq!(
        store.effect_counts("sms:fee_due").await.unwrap(),
        accepted_ever - counts["review_rejected"] - counts["correction_lapsed"]
    );
    // The independent invariant checker agrees …
    // (The demo stopped its workers as soon as every case ended; trailing SMS events may still be
    // queued, so event accounting is left to the replica and fault tests, which wait for quiet.)
    let verified = wangban::verify::check(
        store,
        &pipeline.topology.workers,
        std::time::Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(verified.violations.is_empty(), "{:?}", verified.violations);
    assert_eq!(verified.cases as u64, audit.cases);
    assert_eq!(verified.outbox_backlog, 0);
    // The simulated parties saw one request per case, whatever the redeliveries.
    assert_eq!(
        pipeline.simulation.distinct_requests("shipment:") as i64,
        counts["delivered"] + returned
    );
    // … and names the first violation when history is damaged: an invalidation erased.
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&env.settings.database_url)
            .await
            .unwrap();
        sqlx::query(
            "DELETE FROM effects WHERE purpose = 'document_invalidated' AND case_id = \
             (SELECT MIN(case_id) FROM effects WHERE purpose = 'document_invalidated')",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        let _ = conn.close().await;
    }
    let out = std::process::Command::new(wangban_tests::wangban_binary())
        .args(["verify", "--database-url", &env.settings.database_url])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("entered accepted but has no document_invalidated"),
        "{text}"
    );
    env.cleanup(&pipeline).await;
}
