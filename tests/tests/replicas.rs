//! Many replicas, one truth: three `wangban serve` processes of every worker (fifteen OS
//! processes) on one RabbitMQ and one PostgreSQL. Every case completes as its scenario expects,
//! no effect happens twice, no step is applied twice, and per case the order that matters holds —
//! a resubmission is never handled before the correction request it answers.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use wangban::demo;
use wangban::pipeline::{Pipeline, WORKERS};
use wangban_tests::{RealServices, wangban_binary};

struct Replicas(Vec<Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_of_every_worker_share_one_truth() {
    let env = RealServices::new("replicas").await;
    let client = Pipeline::connect(&env.settings)
        .await
        .expect("connect and declare");
    let s = &env.settings;
    let logs = std::env::temp_dir().join(format!("wangban-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&logs).unwrap();
    let mut replicas = Replicas(Vec::new());
    for worker in WORKERS {
        for n in 0..3 {
            let log = std::fs::File::create(logs.join(format!("{worker}-{n}.log"))).unwrap();
            let child = Command::new(wangban_binary())
                .args(["serve", "--workers", worker, "--http-addr", "127.0.0.1:0"])
                .env("AMQP_URL", s.amqp_url.as_deref().unwrap())
                .env("DATABASE_URL", &s.database_url)
                .env("WANGBAN_QUEUE_PREFIX", &s.queue_prefix)
                .env("WANGBAN_SIM_DELAY_MS", "5")
                .env("WANGBAN_TICK_MS", "200")
                .env("WANGBAN_PAYMENT_WINDOW_SECS", "4")
                .env("WANGBAN_PAYMENT_REMINDER_SECS", "2")
                .env("WANGBAN_PREFETCH", "8")
                .env("WANGBAN_DB_POOL_SIZE", "4")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("wangban serve starts");
            replicas.0.push(child);
        }
    }

    let report = demo::drive(&client, s, 190, 3, false, None)
        .await
        .expect("drive");
    assert!(
        report.unexpected.is_empty(),
        "unexpected outcomes: {:?}",
        report.unexpected
    );
    assert_eq!(report.cases, 190);

    // Every process is still alive: nobody crashed under contention.
    for c in &mut replicas.0 {
        assert!(
            c.try_wait().unwrap().is_none(),
            "a replica exited early; logs in {}",
            logs.display()
        );
    }
    let store = &client.runtime.store;
    let audit = store.verify_audit().await.unwrap();
    assert!(audit.problems.is_empty(), "{:?}", audit.problems);

    // No step applied twice to a case, and the order that matters holds.
    let mut corrections = 0;
    for id in store
        .states_by_application(&report.run_id)
        .await
        .unwrap()
        .keys()
    {
        let view = store.case_view(id).await.unwrap().unwrap();
        let mut steps: BTreeMap<String, usize> = BTreeMap::new();
        let mut order = Vec::new();
        for r in &view.audit {
            let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap();
            if r.kind == "transition" {
                let step = detail["step"].as_str().unwrap().to_owned();
                *steps.entry(step.clone()).or_default() += 1;
                order.push(step);
            } else if r.kind == "resubmission_accepted" {
                order.push("resubmission_accepted".into());
            }
        }
        for (step, n) in &steps {
            let allowed = if step == "start_review" || step == "approve" || step == "reject_review"
            {
                1
            } else {
                2
            };
            assert!(
                *n <= allowed,
                "{id}: step {step} applied {n} times: {order:?}"
            );
            if !["resubmit", "request_correction"].contains(&step.as_str()) {
                assert_eq!(*n, 1, "{id}: step {step} applied {n} times: {order:?}");
            }
        }
        if let Some(pos) = order.iter().position(|s| s == "request_correction") {
            corrections += 1;
            let resub = order
                .iter()
                .position(|s| s == "resubmission_accepted")
                .expect("resubmitted");
            let back = order
                .iter()
                .position(|s| s == "resubmit")
                .expect("back in review");
            assert!(pos < resub && resub < back, "{id}: out of order: {order:?}");
        }
    }
    assert!(
        corrections >= 9,
        "the run must include correction rounds ({corrections})"
    );

    // Effects once: one invalidation per accepted case, one fee SMS per approval, one shipment
    // per delivered case (the primary keys make more impossible; the counts show none is missing).
    // Counted once the pipeline is quiet: an SMS follows the state change it announces.
    wangban_tests::quiesce(&client).await;
    let counts = store.count_by_state().await.unwrap();
    let n = |s: &str| counts.get(s).copied().unwrap_or(0);
    let accepted = n("delivered")
        + n("collected")
        + n("ready_for_pickup")
        + n("review_rejected")
        + n("correction_lapsed")
        + n("payment_expired");
    assert_eq!(
        store.effect_counts("document_invalidated").await.unwrap(),
        accepted
    );
    assert_eq!(
        store.effect_counts("sms:fee_due").await.unwrap(),
        accepted - n("review_rejected") - n("correction_lapsed")
    );
    assert_eq!(
        store.effect_counts("shipment").await.unwrap(),
        n("delivered") + report.scenarios["courier_returned"].cases as i64
    );
    assert_eq!(
        store.effect_counts("production_order").await.unwrap(),
        n("delivered") + n("collected") + n("ready_for_pickup")
    );
    assert_eq!(
        store.effect_counts("sms:payment_expired").await.unwrap(),
        n("payment_expired")
    );

    let verified =
        wangban::verify::check(store, &client.topology.workers, std::time::Duration::ZERO)
            .await
            .unwrap();
    assert!(
        verified.events_accounted > 1000,
        "{}",
        verified.events_accounted
    );
    assert!(verified.violations.is_empty(), "{:?}", verified.violations);
    drop(replicas);
    let _ = std::fs::remove_dir_all(&logs);
    env.cleanup(&client).await;
}
