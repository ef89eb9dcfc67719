//! The fault-injection suite: each scenario runs hundreds of mixed cases through workers running
//! as separate OS processes (two per worker) on real RabbitMQ and PostgreSQL while a fault is
//! injected, then the independent checker (`wangban verify`) and the scenario expectations decide.
//! It stops and restarts the shared broker and database, so it runs on its own, after the other
//! tests (`scripts/test.sh`, `scripts/reliability.sh`). The table it prints is docs/reliability.md's.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use wangban::demo;
use wangban::pipeline::Pipeline;
use wangban_tests::{RealServices, WorkerProcesses};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    KillWorkers,
    RestartBroker,
    RestartDatabase,
    ProviderOutage,
    DuplicatesAndReplays,
    Backlog,
    SlowParty,
    BrokerAwayAtSubmission,
}

struct Row {
    scenario: &'static str,
    cases: usize,
    faults: String,
    /// (application id, expected state, state reached) of each case not where it should be.
    lost: Vec<(String, String, String)>,
    duplicate_effects: usize,
    violations: Vec<String>,
    recovery_s: f64,
    total_s: f64,
    crashed: usize,
}

fn blocking(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn run_blocking(program: &'static str, args: Vec<String>) {
    tokio::task::spawn_blocking(move || {
        blocking(
            program,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
    .await
    .unwrap();
}

fn pg_version() -> String {
    std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql (Debian's PostgreSQL)")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .next()
        .expect("a PostgreSQL cluster")
}

/// `(case, purpose)` SMS and `(case, step)` transitions recorded more than once.
async fn duplicate_effects(store: &wangban_store::Store) -> usize {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (case, records) in store.snapshot().await.unwrap().audit {
        for r in records {
            let detail: serde_json::Value = serde_json::from_str(&r.detail).unwrap_or_default();
            let key = match r.kind.as_str() {
                "sms_sent" => format!("sms:{}", detail["purpose"]),
                "transition" => format!("step:{}", detail["step"]),
                "document_invalidated" => "invalidation".into(),
                _ => continue,
            };
            *seen.entry((case.clone(), key)).or_default() += 1;
        }
    }
    seen.values().filter(|n| **n > 1).map(|n| n - 1).sum()
}

async fn scenario(name: &'static str, fault: Fault, cases: usize) -> Row {
    let slug = format!("fault{}", fault as u8);
    let mut env = RealServices::new(&slug).await;
    env.settings.sim_delay = Duration::from_millis(5);
    env.settings.runtime.tick = Duration::from_millis(250);
    env.settings.fees.payment_window =
        Duration::from_secs(if fault == Fault::Backlog { 30 } else { 15 });
    env.settings.fees.reminder_after = env.settings.fees.payment_window / 2;
    let client = Pipeline::connect(&env.settings).await.expect("connect");
    let outage = std::env::temp_dir().join(format!("wangban-outage-{slug}-{}", std::process::id()));
    std::fs::write(&outage, "").unwrap();
    let mut extra = vec![(
        "WANGBAN_SIM_OUTAGE_FILE",
        outage.to_str().unwrap().to_owned(),
    )];
    if fault == Fault::DuplicatesAndReplays {
        extra.push(("WANGBAN_SIM_DUPLICATES", "1".into()));
    }
    if fault == Fault::SlowParty {
        extra.push(("WANGBAN_SIM_SLOW", "sms,payment:2000:30".into()));
    }
    let extra_ref: Vec<(&str, &str)> = extra.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let workers = Arc::new(Mutex::new(if fault == Fault::Backlog {
        None
    } else {
        Some(WorkerProcesses::start(&env.settings, 2, &extra_ref))
    }));

    // Progress: cases in a terminal state, sampled every 100 ms.
    let store = client.runtime.store.clone();
    let samples: Arc<Mutex<Vec<(Instant, i64)>>> = Arc::default();
    let watcher = {
        let (store, samples) = (store.clone(), samples.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(counts) = store.count_by_state().await {
                    let done = [
                        "rejected",
                        "review_rejected",
                        "payment_expired",
                        "delivered",
                        "collected",
                    ]
                    .iter()
                    .map(|s| counts.get(*s).copied().unwrap_or(0))
                    .sum();
                    samples.lock().unwrap().push((Instant::now(), done));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    if fault == Fault::BrokerAwayAtSubmission {
        // The portal's connection is open (the client declared the topology): it is lost now,
        // then refused until the broker is back.
        run_blocking("rabbitmqctl", vec!["stop_app".into()]).await;
    }
    let submitted = Arc::new(Notify::new());
    let injector = {
        let (submitted, workers, settings, outage) = (
            submitted.clone(),
            workers.clone(),
            env.settings.clone(),
            outage.clone(),
        );
        let extra: Vec<(String, String)> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        let bus = client.runtime.bus.clone();
        tokio::spawn(async move {
            if fault != Fault::BrokerAwayAtSubmission {
                submitted.notified().await;
            }
            let described = match fault {
                Fault::KillWorkers => {
                    let mut rng = demo::Rng::new(99);
                    for _ in 0..30 {
                        tokio::time::sleep(Duration::from_millis(300 + rng.below(400))).await;
                        let i = rng.below(1000) as usize;
                        workers
                            .lock()
                            .unwrap()
                            .as_mut()
                            .unwrap()
                            .kill_and_restart(i)
                            .expect("restart a worker process");
                    }
                    "30 SIGKILLs of random worker processes, 0.3–0.7 s apart, each restarted"
                        .to_string()
                }
                Fault::RestartBroker => {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    run_blocking("rabbitmqctl", vec!["stop_app".into()]).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    run_blocking("rabbitmqctl", vec!["start_app".into()]).await;
                    "RabbitMQ stopped for 5 s (rabbitmqctl stop_app), then started".to_string()
                }
                Fault::RestartDatabase => {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    let v = pg_version();
                    run_blocking(
                        "pg_ctlcluster",
                        vec![
                            "--skip-systemctl-redirect".into(),
                            v.clone(),
                            "main".into(),
                            "stop".into(),
                            "-m".into(),
                            "fast".into(),
                        ],
                    )
                    .await;
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    run_blocking(
                        "pg_ctlcluster",
                        vec![
                            "--skip-systemctl-redirect".into(),
                            v,
                            "main".into(),
                            "start".into(),
                        ],
                    )
                    .await;
                    "PostgreSQL stopped for 4 s (fast shutdown), then started".to_string()
                }
                Fault::ProviderOutage => {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    std::fs::write(&outage, "sms\ncourier\npayment\n").unwrap();
                    tokio::time::sleep(Duration::from_secs(6)).await;
                    std::fs::write(&outage, "").unwrap();
                    "SMS gateway, payment gateway and courier down for 6 s".to_string()
                }
                Fault::DuplicatesAndReplays => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    // Replay already-published events, as a relay crash or an operator would.
                    let replayed =
                        replay_published(&settings.database_url, bus.as_ref(), 150).await;
                    format!(
                        "every party answer sent twice, the copy late (out of order); {replayed} published events republished"
                    )
                }
                Fault::BrokerAwayAtSubmission => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    run_blocking("rabbitmqctl", vec!["start_app".into()]).await;
                    "RabbitMQ stopped as the portal starts submitting, started 5 s later: the portal retries"
                        .to_string()
                }
                Fault::SlowParty => {
                    "SMS and payment gateways answer after 2 s, 30 % of calls time out (throughout)"
                        .to_string()
                }
                Fault::Backlog => {
                    let refs: Vec<(&str, &str)> = extra
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_str()))
                        .collect();
                    *workers.lock().unwrap() = Some(WorkerProcesses::start(&settings, 2, &refs));
                    "all applications queued before any worker started".to_string()
                }
            };
            (described, Instant::now())
        })
    };

    let started = Instant::now();
    let report = demo::drive(&client, &env.settings, cases, 5, false, Some(&submitted))
        .await
        .expect("drive");
    let (faults, fault_end) = injector.await.unwrap();
    let total_s = started.elapsed().as_secs_f64();
    watcher.abort();
    let samples = samples.lock().unwrap().clone();
    let at_end = samples
        .iter()
        .rev()
        .find(|(t, _)| *t <= fault_end)
        .map_or(0, |(_, n)| *n);
    let recovery_s = samples
        .iter()
        .find(|(t, n)| *t > fault_end && *n > at_end)
        .map_or(0.0, |(t, _)| t.duration_since(fault_end).as_secs_f64());
    // Every committed event must have been handled: wait until nothing is left in flight.
    wangban_tests::quiesce(&client).await;
    let verified = wangban::verify::check(&store, &client.topology.workers, Duration::ZERO)
        .await
        .expect("verify");
    let duplicate_effects = duplicate_effects(&store).await;
    let crashed = workers.lock().unwrap().as_mut().map_or(0, |w| w.exited());
    drop(workers);
    let _ = std::fs::remove_file(&outage);
    env.cleanup(&client).await;
    Row {
        scenario: name,
        cases: report.cases,
        faults,
        lost: report.unexpected,
        duplicate_effects,
        violations: verified.violations,
        recovery_s,
        total_s,
        crashed,
    }
}

/// Republishes up to `n` already-published outbox events.
async fn replay_published(database_url: &str, bus: &dyn wangban_bus::Bus, n: i64) -> usize {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(database_url).await.unwrap();
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT routing_key, payload FROM outbox WHERE published_at IS NOT NULL ORDER BY id LIMIT $1")
            .bind(n)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let out: Vec<wangban_bus::Outgoing> = rows
        .into_iter()
        .map(|(k, p)| wangban_bus::Outgoing {
            routing_key: k,
            message_id: String::new(),
            payload: p.into_bytes(),
            traceparent: None,
        })
        .collect();
    bus.publish(&out).await.unwrap();
    out.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_injection_suite() {
    let only = std::env::var("WANGBAN_FAULTS").ok();
    let plan: [(&str, Fault, usize); 8] = [
        ("worker SIGKILL", Fault::KillWorkers, 400),
        ("RabbitMQ restart", Fault::RestartBroker, 400),
        (
            "RabbitMQ away during submission",
            Fault::BrokerAwayAtSubmission,
            400,
        ),
        ("PostgreSQL restart", Fault::RestartDatabase, 400),
        ("provider outage", Fault::ProviderOutage, 400),
        (
            "duplicated, reordered, replayed",
            Fault::DuplicatesAndReplays,
            400,
        ),
        ("slow, flaky parties", Fault::SlowParty, 400),
        ("deep backlog", Fault::Backlog, 10_000),
    ];
    let mut rows = Vec::new();
    for (name, fault, cases) in plan {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|x| name.contains(x.trim())))
        {
            continue;
        }
        eprintln!("[faults] {name}: {cases} cases …");
        let row = scenario(name, fault, cases).await;
        eprintln!(
            "[faults] {name}: lost {}, duplicate effects {}, violations {}, recovery {:.1} s, total {:.1} s",
            row.lost.len(),
            row.duplicate_effects,
            row.violations.len(),
            row.recovery_s,
            row.total_s
        );
        rows.push(row);
    }
    let mut table = String::from(
        "| scenario | cases | faults injected | cases lost | duplicate effects | checker violations | time to recover | run time |\n|---|---:|---|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        table.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} s |\n",
            r.scenario,
            r.cases,
            r.faults,
            r.lost.len(),
            r.duplicate_effects,
            r.violations.len(),
            if r.recovery_s > 0.0 {
                format!("{:.1} s", r.recovery_s)
            } else {
                "none needed".into()
            },
            r.total_s
        ));
    }
    println!("{table}");
    let target = wangban_tests::workspace_root().join("target");
    let _ = std::fs::create_dir_all(&target);
    std::fs::write(target.join("reliability.md"), &table).unwrap();
    for r in &rows {
        assert!(
            r.lost.is_empty(),
            "{}: cases lost (application, expected, reached): {:?}",
            r.scenario,
            r.lost
        );
        assert_eq!(r.duplicate_effects, 0, "{}: duplicate effects", r.scenario);
        assert!(
            r.violations.is_empty(),
            "{}: {:?}",
            r.scenario,
            r.violations
        );
        assert_eq!(r.crashed, 0, "{}: a worker process crashed", r.scenario);
    }
}
