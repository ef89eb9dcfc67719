//! The operations dashboard in headless Chromium (Debian's `chromium`, driven by playwright-core
//! from `tests/browser`): sign-in, queues, the chart, SLA, a dead letter replayed by a click, a case
//! found by ID number with its timeline — on real RabbitMQ and PostgreSQL. Screenshots land in
//! `target/screenshots/` (and in `docs/` with `WANGBAN_UPDATE_SCREENSHOTS=1`).

use serde_json::json;
use std::time::Duration;
use tokio::sync::watch;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::{Pipeline, WORKERS};
use wangban_tests::{RealServices, browser_run, eventually, free_port, http, screenshot_dir};

const TOKEN: &str = "dashboard-test-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_uses_the_dashboard_in_chromium() {
    let mut env = RealServices::new("dashboard").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    env.settings.http_addr = format!("127.0.0.1:{port}");
    env.settings.operator_token = Some(wangban::settings::Secret::new(TOKEN));
    env.settings.sample_every = Duration::from_millis(250);
    let (stop, stop_rx) = watch::channel(false);
    let settings = env.settings.clone();
    let server =
        tokio::spawn(async move { wangban::serve::run(&settings, &WORKERS, stop_rx).await });
    eventually(Duration::from_secs(30), "ready", || async {
        http("GET", &format!("{base}/readyz"), None, None).await.0 == 200
    })
    .await;

    let client = Pipeline::connect(&env.settings).await.unwrap();
    let mut rng = Rng::new(31);
    let scenarios = [
        Scenario::PassportCourier,
        Scenario::PermitPickup,
        Scenario::Under16,
        Scenario::ReviewRejected,
    ];
    for n in 0..12 {
        client
            .submit(
                &application("DASH", n, scenarios[n % scenarios.len()], &mut rng),
                false,
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await; // a few samples along the way
    }
    let looked_up = application("DASH", 99, Scenario::PassportCourier, &mut rng);
    client.submit(&looked_up, false).await.unwrap();
    let mut broken = application("DASH", 100, Scenario::PassportCourier, &mut rng);
    broken["delivery"] = json!({"method": "drone"});
    client.submit(&broken, false).await.unwrap();
    let store = client.runtime.store.clone();
    eventually(
        Duration::from_secs(60),
        "every case to finish and the broken one to be dead-lettered",
        || async {
            let states = store.states_by_application("DASH").await.unwrap();
            states.len() == 13
                && states.values().all(|s| {
                    ["delivered", "collected", "rejected", "review_rejected"].contains(&s.as_str())
                })
                && store.dead_letters(Some("intake")).await.unwrap().len() == 1
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let shots = screenshot_dir();
    let id_number = looked_up["applicant"]["id_number"].as_str().unwrap();
    let seen = browser_run(
        "dashboard.mjs",
        &[&base, TOKEN, id_number, shots.to_str().unwrap()],
    );
    assert_eq!(seen["signin_visible"], true);
    assert_eq!(seen["wrong_token_refused"], true);
    assert_eq!(seen["queue_workers"], json!(WORKERS));
    let series: Vec<&str> = seen["chart_series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        series.contains(&"delivered") && series.contains(&"rejected"),
        "{series:?}"
    );
    assert_eq!(seen["sla_rows"], 7);
    assert_eq!(seen["dead_letters_before"], 1);
    assert_eq!(seen["replayed_shown"], 1);
    let header = seen["case_header"].as_str().unwrap();
    assert!(
        header.contains(&wangban_domain::id_number::mask(id_number)) && header.contains("verifies"),
        "{header}"
    );
    let kinds: Vec<&str> = seen["timeline_kinds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"transition") && kinds.contains(&"sms_sent"),
        "{kinds:?}"
    );
    assert!(
        !seen["page_text"].as_str().unwrap().contains(id_number),
        "the page shows the ID number in the clear"
    );

    // The click replayed the dead letter once (it is malformed, so it is refused again: a new record).
    let dead = store.dead_letters(Some("intake")).await.unwrap();
    assert_eq!(dead.iter().filter(|d| d.replayed_at.is_some()).count(), 1);
    eventually(
        Duration::from_secs(20),
        "the replayed message to be refused again",
        || async { store.dead_letters(Some("intake")).await.unwrap().len() == 2 },
    )
    .await;
    for name in ["dashboard.png", "dashboard-case.png"] {
        let png = std::fs::read(shots.join(name)).unwrap();
        assert!(
            png.starts_with(b"\x89PNG") && png.len() > 10_000,
            "{name} is not a real screenshot"
        );
    }
    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    env.cleanup(&client).await;
}
