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

/// An SMS gateway that holds every call until the test opens its gate, so that the answers come
/// back together.
struct GatedSms {
    arrived: std::sync::atomic::AtomicUsize,
    gate: tokio::sync::Semaphore,
}

#[async_trait::async_trait]
impl wangban_runtime::Executor for GatedSms {
    fn party(&self) -> wangban_domain::effects::Party {
        wangban_domain::effects::Party::Sms
    }
    async fn execute(
        &self,
        _case: &wangban_store::CaseRecord,
        _effect: &wangban_domain::effects::Effect,
        key: &str,
    ) -> Result<wangban_domain::effects::Outcome, wangban_providers::ProviderError> {
        self.arrived
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _pass = self.gate.acquire().await.unwrap();
        Ok(wangban_domain::effects::Outcome::Done {
            result: serde_json::json!({ "provider_id": format!("gated-{key}") }),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_come_back_together_share_a_transaction_and_one_that_fails_is_recorded_alone()
{
    use wangban_domain::ids::{ApplicationId, CaseId};
    const CASES: usize = 6;
    let mut env = RealServices::new("effect-answers").await;
    env.settings.runtime.batch = 16;
    env.settings.runtime.effect_concurrency = 16;
    // One recording transaction at a time: the answers that come back while it commits share
    // the next one.
    env.settings.runtime.concurrency = 1;
    let pipeline = Pipeline::connect(&env.settings).await.unwrap();
    let store = pipeline.runtime.store.clone();
    // Six cases with an SMS each, and a seventh whose case is gone by the time its SMS is answered.
    let mut cases = Vec::new();
    let mut tx = store.begin().await.unwrap();
    for n in 0..=CASES {
        let app = application(
            "ANSWERS",
            n,
            Scenario::PassportCourier,
            &mut Rng::new(n as u64),
        );
        let app_id = format!("ANSWERS-{n}");
        let case = CaseId::for_application(&ApplicationId::parse(&app_id).unwrap());
        let new = wangban_store::NewCase {
            case_id: case.clone(),
            application_id: app_id,
            id_fingerprint: Some(format!("fp-answers-{n}")),
            document_kind: Some("passport".into()),
            delivery_method: "courier".into(),
            application: app.to_string(),
        };
        tx.insert_case(&new, true, &format!("evt_answers_{n}"))
            .await
            .unwrap();
        let sms = wangban_domain::effects::Effect::Sms {
            name: "fee_due".into(),
            purpose: "fee_due".into(),
            template: "fee_due".into(),
            params: Default::default(),
            text: "test".into(),
        };
        let command = serde_json::to_string(&sms).unwrap();
        let asked = tx
            .request_effect(
                &case,
                &sms.purpose(),
                "sms",
                &command,
                "evt_cause",
                "evt_cause",
            )
            .await
            .unwrap();
        assert!(asked);
        cases.push(case);
    }
    tx.commit().await.unwrap();
    let gone = cases.pop().unwrap();

    let sms = std::sync::Arc::new(GatedSms {
        arrived: Default::default(),
        gate: tokio::sync::Semaphore::new(0),
    });
    let (stop, stop_rx) = watch::channel(false);
    let runtime = pipeline.runtime.clone();
    let executor = sms.clone();
    let running = tokio::spawn(async move { runtime.run_executor(executor, stop_rx).await });
    eventually(
        Duration::from_secs(30),
        "every call to reach the gateway",
        || async { sms.arrived.load(std::sync::atomic::Ordering::SeqCst) == CASES + 1 },
    )
    .await;
    // The seventh case goes while its call is out (as an erasure would take it).
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&env.settings.database_url)
            .await
            .unwrap();
        let done = sqlx::query("DELETE FROM cases WHERE case_id = $1")
            .bind(gone.as_str())
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(done.rows_affected(), 1);
    }
    sms.gate.add_permits(CASES + 1);

    let purpose = "sms:fee_due";
    eventually(
        Duration::from_secs(30),
        "the six answers recorded",
        || async {
            let mut done = 0;
            for case in &cases {
                let commands = store.effect_commands_of(case.as_str()).await.unwrap();
                done += commands
                    .iter()
                    .filter(|c| c.purpose == purpose && c.state == "done")
                    .count();
            }
            done == CASES
        },
    )
    .await;
    let _ = stop.send(true);
    running.await.unwrap();

    let (transactions, answers) = pipeline.runtime.metrics.answers_recorded_total("sms");
    assert_eq!(answers, CASES as u64, "each answer recorded once");
    assert!(
        transactions < answers,
        "answers that came back together shared commits: {transactions} transactions for {answers}"
    );
    for case in &cases {
        let audit = store.audit_of(case.as_str()).await.unwrap();
        let sent = audit.iter().filter(|r| r.kind == "sms_sent").count();
        assert_eq!(sent, 1, "{case}: {audit:?}");
    }
    // The answer whose case had gone failed in its batch and again alone: nothing of it was
    // kept (its `effects` row undone with its savepoint), and its command waits for its lease.
    let left = store.effect_commands_of(gone.as_str()).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].state, "pending", "{left:?}");
    let mut tx = store.begin().await.unwrap();
    assert_eq!(tx.effect(&gone, purpose).await.unwrap(), None);
    drop(tx);
    env.cleanup(&pipeline).await;
}
