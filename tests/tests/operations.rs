//! Operations on real RabbitMQ and PostgreSQL: health and readiness, metrics that move as cases
//! flow, a dead letter replayed to completion exactly once (HTTP and CLI), case search by ID
//! number with the whole timeline, and readiness when the broker is down.

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use tokio::sync::watch;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::{Pipeline, WORKERS};
use wangban_domain::events::EventType;
use wangban_domain::ids::{ApplicationId, CaseId};
use wangban_runtime::ingress;
use wangban_tests::{RealServices, eventually, free_port, http, wangban_binary};

const TOKEN: &str = "ops-test-operator-token";

/// `promtool check metrics` (Prometheus' own linter: exposition format, HELP and TYPE, names,
/// units, counters' `_total`) says nothing about `body`.
fn promtool_check(body: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package; scripts/test.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}"
    );
}

fn metric(body: &str, line_start: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_a_dead_letter_is_replayed_to_completion() {
    let mut env = RealServices::new("ops").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    env.settings.http_addr = format!("127.0.0.1:{port}");
    env.settings.operator_token = Some(wangban::settings::Secret::new(TOKEN));
    env.settings.sample_every = Duration::from_millis(300);
    // Slow parties: each call takes 300 ms.
    env.settings.sim_delay = Duration::from_millis(300);
    env.settings.fees.payment_window = Duration::from_secs(300);
    env.settings.fees.reminder_after = Duration::from_secs(300);

    let (stop, stop_rx) = watch::channel(false);
    let settings = env.settings.clone();
    let server =
        tokio::spawn(async move { wangban::serve::run(&settings, &WORKERS, stop_rx).await });
    eventually(Duration::from_secs(30), "/readyz to say ready", || async {
        http("GET", &format!("{base}/readyz"), None, None).await.0 == 200
    })
    .await;
    assert_eq!(
        http("GET", &format!("{base}/healthz"), None, None).await.0,
        200
    );
    assert_eq!(
        http("GET", &format!("{base}/api/ops/queues"), None, None)
            .await
            .0,
        401
    );
    assert_eq!(
        http(
            "GET",
            &format!("{base}/api/ops/queues"),
            Some("wrong"),
            None
        )
        .await
        .0,
        401
    );
    let before = http("GET", &format!("{base}/metrics"), None, None).await.1;
    let intake_handled = "wangban_messages_consumed_total{worker=\"intake\"";

    // A client for submitting, sharing the test's schema and prefix.
    let client = Pipeline::connect(&env.settings).await.unwrap();
    let mut rng = Rng::new(21);
    for n in 0..10 {
        client
            .submit(
                &application("OPSA", n, Scenario::PassportCourier, &mut rng),
                false,
            )
            .await
            .unwrap();
    }
    // The case whose payment report comes too early: before its application, so notify finds no
    // case and dead-letters it.
    let unpaid = application("OPSB", 99, Scenario::Unpaid, &mut rng);
    let case = CaseId::for_application(
        &ApplicationId::parse(unpaid["application_id"].as_str().unwrap()).unwrap(),
    );
    let early = ingress::event(
        client.runtime.store.clock(),
        EventType::PaymentReported,
        "/payment-gateway",
        &case,
        None,
        serde_json::json!({"payment_id": "PAY-EARLY-1", "amount_cny": 120, "status": "succeeded",
                           "gateway_order_id": wangban_providers::simulated::gateway_order_id(&case)}),
    );
    client.runtime.queue_ingress(&early).await.unwrap();
    let store = client.runtime.store.clone();
    eventually(
        Duration::from_secs(30),
        "the early payment to be dead-lettered",
        || async { store.dead_letters(Some("notify")).await.unwrap().len() == 1 },
    )
    .await;
    client.submit(&unpaid, false).await.unwrap();

    eventually(
        Duration::from_secs(60),
        "ten cases delivered and the early payment dead-lettered",
        || async {
            let states = store.states_by_application("OPSA-").await.unwrap();
            states.values().filter(|s| *s == "delivered").count() == 10
                && store.dead_letters(Some("notify")).await.unwrap().len() == 1
        },
    )
    .await;

    // Metrics moved.
    let after = http("GET", &format!("{base}/metrics"), None, None).await.1;
    assert!(
        metric(&after, intake_handled) >= metric(&before, intake_handled) + 11.0,
        "{after}"
    );
    // What the database says of the whole deployment is at /metrics/store, not per process.
    let store_metrics = http("GET", &format!("{base}/metrics/store"), None, None)
        .await
        .1;
    assert!(metric(&store_metrics, "wangban_cases{state=\"delivered\"}") >= 10.0);
    assert!(!after.contains("wangban_cases{"), "{after}");
    assert!(metric(&after, "wangban_messages_published_total{path=\"relay\"") > 0.0);
    assert!(
        metric(
            &after,
            "wangban_messages_dead_lettered_total{worker=\"notify\""
        ) >= 1.0
    );
    assert!(after.contains("wangban_handle_seconds_bucket{worker=\"courier\",le=\"+Inf\"}"));
    assert!(store_metrics.contains("wangban_sla_breaches{sla=\"review_clock\"} 0"));
    // The build and the standard process metrics, as every Prometheus client exports them.
    assert!(after.contains("wangban_build_info{version=\""), "{after}");
    assert!(
        metric(&after, "process_resident_memory_bytes") > 1e6,
        "{after}"
    );
    assert!(metric(&after, "process_cpu_seconds_total") > 0.0, "{after}");
    assert!(metric(&after, "process_open_fds") > 3.0, "{after}");
    let started = metric(&after, "process_start_time_seconds");
    let now = chrono::Utc::now().timestamp() as f64;
    assert!(
        started > now - 3600.0 && started <= now + 1.0,
        "{started} vs {now}"
    );
    promtool_check(&after);
    promtool_check(&store_metrics);
    // The last cases' SMS answers may still be committing events: the backlog drains to 0.
    assert!(
        store_metrics.contains("wangban_outbox_backlog "),
        "{store_metrics}"
    );
    eventually(
        Duration::from_secs(30),
        "the outbox backlog metric to read 0",
        || async {
            http("GET", &format!("{base}/metrics/store"), None, None)
                .await
                .1
                .contains("wangban_outbox_backlog 0")
        },
    )
    .await;

    // The queue view reads the broker.
    let queues: Value = serde_json::from_str(
        &http("GET", &format!("{base}/api/ops/queues"), Some(TOKEN), None)
            .await
            .1,
    )
    .unwrap();
    let notify = queues["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["worker"] == "notify")
        .unwrap()
        .clone();
    assert_eq!(notify["consumers"], 1);
    assert_eq!(notify["dead_letters_ready"], 1);
    // Rates count every process's handling over the last minute (from the inbox).
    assert!(
        notify["handled_per_s"].as_f64().unwrap() * 60.0 >= 40.0,
        "{notify}"
    );

    // The dead letter, listed by the CLI with its reason …
    let db = &env.settings.database_url;
    let out = Command::new(wangban_binary())
        .args([
            "dlq",
            "list",
            "--worker",
            "notify",
            "--json",
            "--database-url",
            db,
        ])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_str(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .next()
            .expect("one dead letter"),
    )
    .unwrap();
    assert_eq!(listed["event_type"], "wangban.payment.reported.v1");
    assert_eq!(listed["case_id"], case.as_str());
    assert!(
        listed["reason"].as_str().unwrap().contains("no case"),
        "{listed}"
    );
    let id = listed["id"].as_i64().unwrap();

    // … waits until its case is awaiting payment, then is replayed once and completes the case.
    eventually(
        Duration::from_secs(30),
        "the unpaid case to await payment",
        || async {
            store
                .states_by_application("OPSB")
                .await
                .unwrap()
                .values()
                .any(|s| s == "awaiting_payment")
        },
    )
    .await;
    let (status, body) = http(
        "POST",
        &format!("{base}/api/ops/dead-letters/{id}/replay"),
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    eventually(
        Duration::from_secs(60),
        "the replayed payment to carry the case to delivery",
        || async {
            store
                .states_by_application("OPSB")
                .await
                .unwrap()
                .values()
                .any(|s| s == "delivered")
        },
    )
    .await;
    assert_eq!(
        http(
            "POST",
            &format!("{base}/api/ops/dead-letters/{id}/replay"),
            Some(TOKEN),
            None
        )
        .await
        .0,
        404
    );
    let again = Command::new(wangban_binary())
        .args([
            "dlq",
            "replay",
            &id.to_string(),
            "--database-url",
            db,
            "--amqp-url",
            &wangban_tests::amqp_url(),
        ])
        .env("WANGBAN_QUEUE_PREFIX", &env.settings.queue_prefix)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1), "a second replay is refused");
    assert!(String::from_utf8_lossy(&again.stderr).contains("no unreplayed dead letter"));

    // A transient failure of the case's handling, as the runtime records one (early answers that
    // a commit soon settles are not recorded, so this run's flow may have none of its own).
    store
        .record_retry(
            case.as_str(),
            "notify",
            "evt_ops_retry",
            "wangban.payment.reported.v1",
            1,
            "database unavailable (injected by the test)",
        )
        .await
        .unwrap();
    // Search by ID number (POSTed, echoed masked) and the whole timeline.
    let id_number = unpaid["applicant"]["id_number"].as_str().unwrap();
    let (_, found) = http(
        "POST",
        &format!("{base}/api/ops/search"),
        Some(TOKEN),
        Some(&format!("{{\"q\":\"{id_number}\"}}")),
    )
    .await;
    assert!(!found.contains(id_number), "{found}");
    let found: Value = serde_json::from_str(&found).unwrap();
    assert_eq!(found["cases"][0]["case_id"], case.as_str());
    let (_, view) = http(
        "GET",
        &format!("{base}/api/ops/cases/{case}"),
        Some(TOKEN),
        None,
    )
    .await;
    assert!(
        !view.contains(id_number) && !view.contains(unpaid["applicant"]["phone"].as_str().unwrap())
    );
    let view: Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view["chain_ok"], true);
    let kinds: Vec<&str> = view["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "case_opened",
        "transition",
        "document_invalidated",
        "sms_sent",
        "retry",
        "dead_letter",
    ] {
        assert!(kinds.contains(&k), "timeline lacks {k}: {kinds:?}");
    }
    let (_, sla) = http("GET", &format!("{base}/api/ops/sla"), Some(TOKEN), None).await;
    assert!(serde_json::from_str::<Value>(&sla).unwrap()["review_clock"].is_array());
    let (_, hist) = http(
        "GET",
        &format!("{base}/api/ops/history?hours=1"),
        Some(TOKEN),
        None,
    )
    .await;
    assert!(
        !serde_json::from_str::<Value>(&hist).unwrap()["samples"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // The operations API describes itself: every route the router serves is in its OpenAPI.
    let (status, spec) = http("GET", &format!("{base}/api/ops/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    let spec: Value = serde_json::from_str(&spec).unwrap();
    assert_eq!(spec["openapi"], "3.0.3");
    let served = wangban_tests::served_routes("/api/ops/");
    assert_eq!(served.len(), 16, "{served:?}");
    for p in served {
        assert!(
            spec["paths"].get(&p).is_some(),
            "{p} is not in the OpenAPI description"
        );
    }

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    env.cleanup(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_says_no_while_the_broker_is_down() {
    let mut env = RealServices::new("readyz").await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    env.settings.http_addr = format!("127.0.0.1:{port}");
    env.settings.amqp_url = Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port())); // nobody listens
    let (stop, stop_rx) = watch::channel(false);
    let settings = env.settings.clone();
    let server =
        tokio::spawn(async move { wangban::serve::run(&settings, &WORKERS, stop_rx).await });
    eventually(Duration::from_secs(20), "/healthz to answer", || async {
        http("GET", &format!("{base}/healthz"), None, None).await.0 == 200
    })
    .await;
    let (status, body) = http("GET", &format!("{base}/readyz"), None, None).await;
    assert_eq!(status, 503, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["database"], "ok");
    assert!(
        body["broker"].as_str().unwrap().starts_with("unreachable"),
        "{body}"
    );
    assert_eq!(body["topology"], "not declared");
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(30), server)
        .await
        .expect("stops while the broker is down")
        .unwrap()
        .unwrap();
    let client = Pipeline::open(&env.settings).await.unwrap();
    env.cleanup(&client).await;
}
