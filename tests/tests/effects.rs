//! Effects after commit, on real RabbitMQ and PostgreSQL: a party that is down stalls only its
//! own effects (the case moves on through the other parties), each of its effects shows its
//! attempts and last error to operators, gives up after the configured attempts (`dead`, on the
//! case's timeline), and is carried out exactly once when an operator retries it.

use serde_json::Value;
use std::time::Duration;
use tokio::sync::watch;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::{Pipeline, WORKERS};
use wangban_tests::{RealServices, eventually, free_port, http, wait_effects};

const TOKEN: &str = "effects-test-operator-token";

async fn get(url: &str) -> Value {
    let (status, body) = http("GET", url, Some(TOKEN), None).await;
    assert_eq!(status, 200, "{url}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_party_down_stalls_only_its_own_effects_and_a_dead_effect_is_retried_once() {
    let mut env = RealServices::new("effects").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    env.settings.http_addr = format!("127.0.0.1:{port}");
    env.settings.operator_token = Some(wangban::settings::Secret::new(TOKEN));
    env.settings.fees.payment_window = Duration::from_secs(300);
    env.settings.fees.reminder_after = Duration::from_secs(300);
    env.settings.runtime.effect_attempts = 3;
    env.settings.runtime.effect_retry_min = Duration::from_millis(50);
    env.settings.runtime.effect_retry_max = Duration::from_millis(200);
    let outage = std::env::temp_dir().join(format!("wangban-effects-outage-{}", env.schema));
    std::fs::write(&outage, "sms\n").unwrap();
    env.settings.sim_faults.outage_file = Some(outage.clone());

    let (stop, stop_rx) = watch::channel(false);
    let settings = env.settings.clone();
    let server =
        tokio::spawn(async move { wangban::serve::run(&settings, &WORKERS, stop_rx).await });
    eventually(Duration::from_secs(30), "/readyz to say ready", || async {
        http("GET", &format!("{base}/readyz"), None, None).await.0 == 200
    })
    .await;
    let client = Pipeline::connect(&env.settings).await.unwrap();
    let store = client.runtime.store.clone();
    let app = application("EFFECTS", 1, Scenario::PassportCourier, &mut Rng::new(7));
    let case = client.submit(&app, false).await.unwrap().to_string();

    // The SMS gateway is down; payment, production and the courier are not: the case is
    // delivered all the same.
    eventually(
        Duration::from_secs(60),
        "the case to be delivered",
        || async {
            store
                .case_view(&case)
                .await
                .ok()
                .flatten()
                .is_some_and(|v| v.case.state.as_str() == "delivered")
        },
    )
    .await;
    // Every SMS it should have had is dead after 3 attempts, with the outage as its error. News
    // of production and shipping is skipped when the case had already moved on by the time
    // notify saw it (sms_skipped on the timeline); the others are always asked for.
    let always = ["sms:document_invalidated", "sms:fee_due", "sms:delivered"];
    let progress = [
        ("sms:in_production", "in_production"),
        ("sms:shipped", "shipped"),
    ];
    let sms_asked = || async {
        let commands = store.effect_commands_of(&case).await.unwrap_or_default();
        let audit = store.audit_of(&case).await.unwrap_or_default();
        let asked: Vec<String> = commands
            .iter()
            .filter(|c| c.party == "sms")
            .map(|c| c.purpose.clone())
            .collect();
        let skipped: Vec<String> = audit
            .iter()
            .filter(|r| r.kind == "sms_skipped")
            .filter_map(|r| serde_json::from_str::<Value>(&r.detail).ok())
            .filter_map(|d| d["announced"].as_str().map(str::to_owned))
            .collect();
        let settled = always.iter().all(|p| asked.iter().any(|a| a == p))
            && progress
                .iter()
                .all(|(p, s)| asked.iter().any(|a| a == p) || skipped.iter().any(|k| k == s));
        (settled, asked, commands)
    };
    eventually(
        Duration::from_secs(30),
        "every SMS asked for or skipped, and given up",
        || async {
            let (settled, _, commands) = sms_asked().await;
            settled
                && commands
                    .iter()
                    .filter(|c| c.party == "sms")
                    .all(|c| c.state == "dead")
        },
    )
    .await;
    let mut asked = sms_asked().await.1;
    asked.sort();
    let sms: Vec<&str> = asked.iter().map(String::as_str).collect();
    let dead = get(&format!("{base}/api/ops/effects?state=dead")).await;
    let listed: Vec<&str> = dead["effects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["attempts"], 3, "{e}");
            assert!(
                e["last_error"].as_str().unwrap().contains("outage of sms"),
                "{e}"
            );
            e["purpose"].as_str().unwrap()
        })
        .collect();
    let mut seen = listed.clone();
    seen.sort();
    assert_eq!(seen, sms);
    assert!(
        dead["counts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["party"] == "sms" && c["state"] == "dead" && c["count"] == sms.len()),
        "{dead}"
    );
    // The case view shows them, and its timeline says each was given up.
    let view = get(&format!("{base}/api/ops/cases/{case}")).await;
    let effects = view["effects"].as_array().unwrap();
    assert!(
        effects
            .iter()
            .any(|e| e["purpose"] == "shipment" && e["state"] == "done"),
        "{view}"
    );
    let failed = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "effect_failed")
        .count();
    assert_eq!(failed, sms.len(), "{view}");
    let metrics = http("GET", &format!("{base}/metrics/store"), None, None)
        .await
        .1;
    let line = format!(
        "wangban_effect_commands{{party=\"sms\",state=\"dead\"}} {}",
        sms.len()
    );
    assert!(metrics.contains(&line), "{metrics}");
    for purpose in &sms {
        assert_eq!(store.effect_counts(purpose).await.unwrap(), 0);
    }

    // The gateway is back; an operator retries each SMS: each is sent once, a second retry of
    // the same effect finds nothing to retry.
    std::fs::write(&outage, "").unwrap();
    for purpose in &sms {
        let url = format!("{base}/api/ops/effects/{case}/{purpose}/retry");
        let (status, body) = http("POST", &url, Some(TOKEN), None).await;
        assert_eq!(status, 200, "{body}");
    }
    for purpose in &sms {
        wait_effects(&store, purpose, 1).await;
    }
    let again = format!("{base}/api/ops/effects/{case}/sms:fee_due/retry");
    assert_eq!(http("POST", &again, Some(TOKEN), None).await.0, 404);
    assert_eq!(
        client.simulation.distinct_requests("sms:") as i64,
        0,
        "the server's parties are its own; the client's made no call"
    );
    wangban_tests::quiesce(&client).await;
    let sent = store
        .audit_of(&case)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind == "sms_sent")
        .count();
    assert_eq!(sent, sms.len());
    let verified = wangban::verify::check(&store, &client.topology.workers, Duration::ZERO)
        .await
        .unwrap();
    assert!(verified.violations.is_empty(), "{:?}", verified.violations);
    assert_eq!((verified.effects_pending, verified.effects_dead), (0, 0));

    let _ = stop.send(true);
    let _ = server.await;
    let _ = std::fs::remove_file(&outage);
    env.cleanup(&client).await;
}
