//! The parties over HTTP (issue #4), on real RabbitMQ and PostgreSQL: the adapters of
//! `wangban_providers::http` against the HTTP fakes of `wangban_tests::fakes`, and the signed
//! callbacks of `wangban serve`'s `/callbacks/…`.

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use wangban::demo::{self, Rng, Scenario};
use wangban::parties::PartySettings;
use wangban::pipeline::{Pipeline, Running, WORKERS};
use wangban_providers::http::Endpoint;
use wangban_tests::fakes::{FakeParties, Knobs, signed_post};
use wangban_tests::{RealServices, eventually, http, quiesce};

const KEY_ID: &str = "wangban-test";
const SECRET: &str = "a shared secret of the test parties";
const OPERATOR: &str = "operator-token-for-tests";

struct Harness {
    env: RealServices,
    pipeline: Pipeline,
    running: Option<Running>,
    api: String,
    fakes: FakeParties,
}

/// A pipeline whose SMS, payment, production and courier are the HTTP fakes, with the HTTP
/// surface (callbacks, operations API) served in-process.
async fn start(test: &str, payment_window: Duration) -> Harness {
    let fakes = FakeParties::start(KEY_ID, SECRET).await;
    let mut env = RealServices::new(test).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let endpoint = |party: &'static str| {
        let mut e = Endpoint::new(party, &fakes.url(party), KEY_ID, SECRET.as_bytes());
        e.timeout = Duration::from_millis(500);
        e.attempts = 4;
        e.min_backoff = Duration::from_millis(50);
        e.max_backoff = Duration::from_millis(400);
        e.max_retry_after = Duration::from_secs(5);
        e.callback_url = Some(format!("{api}/callbacks/{party}"));
        Some(e)
    };
    env.settings.parties = PartySettings {
        sms: endpoint("sms"),
        sms_sign_name: "国家移民管理局".into(),
        sms_template_prefix: "WANGBAN_".into(),
        payment: endpoint("payment"),
        production: endpoint("production"),
        courier: endpoint("courier"),
        callback_tolerance_s: 300,
    };
    env.settings.fees.payment_window = payment_window;
    env.settings.fees.reminder_after = Duration::from_secs(600);
    *fakes.state.receipt_url.lock().unwrap() = Some(format!("{api}/callbacks/sms"));
    let pipeline = Pipeline::connect(&env.settings)
        .await
        .expect("pipeline connects");
    let mut settings = env.settings.clone();
    settings.operator_token = Some(wangban::settings::Secret::new(OPERATOR));
    let state = wangban::serve::app_state(&settings, &pipeline);
    tokio::spawn(wangban_api::serve(state, listener, std::future::pending()));
    let running = Some(pipeline.spawn(&WORKERS).expect("workers start"));
    Harness {
        env,
        pipeline,
        running,
        api,
        fakes,
    }
}

/// [`start`], with `party` taking orders but sending no callbacks: the test answers for it.
async fn start_silent(test: &str, payment_window: Duration, party: &str) -> Harness {
    let h = start(test, payment_window).await;
    h.fakes.set(
        party,
        Knobs {
            no_callbacks: true,
            ..Knobs::default()
        },
    );
    h
}

async fn states(h: &Harness, prefix: &str) -> HashMap<String, String> {
    h.pipeline
        .runtime
        .store
        .states_by_application(prefix)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Waits until every application of `ids` is in `state`.
async fn wait_all_in(h: &Harness, run: &str, ids: &[&String], state: &str) {
    eventually(
        Duration::from_secs(60),
        &format!("{ids:?} to be {state}"),
        || async {
            let s = states(h, run).await;
            ids.iter()
                .all(|a| s.get(*a).map(String::as_str) == Some(state))
        },
    )
    .await;
}

/// `GET` of an operations API path as the operator: the JSON answer (panics unless 200).
async fn ops_get(h: &Harness, path: &str) -> Value {
    let (status, body) = http("GET", &format!("{}{path}", h.api), Some(OPERATOR), None).await;
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

async fn case_json(h: &Harness, id: &str) -> Value {
    ops_get(h, &format!("/api/ops/cases/{id}")).await
}

/// `key` of what the case's effect `purpose` recorded: the gateway's order, the booked waybill.
async fn recorded(h: &Harness, case: &str, purpose: &str, key: &str) -> String {
    let view = h
        .pipeline
        .runtime
        .store
        .case_view(case)
        .await
        .unwrap()
        .unwrap();
    let (_, detail) = view
        .effects
        .iter()
        .find(|(p, _)| p == purpose)
        .unwrap_or_else(|| panic!("no {purpose} recorded"));
    serde_json::from_str::<Value>(detail).unwrap()[key]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_cases_through_the_http_parties_with_faults_and_a_crash() {
    let mut h = start("http_parties", Duration::from_secs(600)).await;
    h.fakes.set(
        "sms",
        Knobs {
            fail_5xx: 6,
            throttle: 3,
            retry_after_s: 1,
            limit_code: 3,
            lost_answer: 3,
            ..Knobs::default()
        },
    );
    h.fakes.set(
        "payment",
        Knobs {
            fail_5xx: 3,
            hang: 2,
            lost_answer: 3,
            duplicate_callbacks: true,
            latency_ms: 5,
            ..Knobs::default()
        },
    );
    h.fakes.set(
        "production",
        Knobs {
            fail_5xx: 3,
            lost_answer: 2,
            duplicate_callbacks: true,
            ..Knobs::default()
        },
    );
    h.fakes.set(
        "courier",
        Knobs {
            throttle: 2,
            retry_after_s: 1,
            lost_answer: 2,
            duplicate_callbacks: true,
            out_of_order: true,
            ..Knobs::default()
        },
    );

    let run = format!("HTTP{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mix = [
        Scenario::PassportCourier,
        Scenario::TaiwanStolenCourier,
        Scenario::PermitPickup,
        Scenario::Correction,
        Scenario::SmsNumberInvalid,
    ];
    let mut rng = Rng::new(11);
    let mut expected = HashMap::new();
    let mut corrections = HashMap::new();
    for n in 0..100 {
        let scenario = mix[n % mix.len()];
        let app = demo::application(&run, n, scenario, &mut rng);
        let id = app["application_id"].as_str().unwrap().to_owned();
        expected.insert(id.clone(), scenario.expected());
        if scenario == Scenario::Correction {
            corrections.insert(id, app.clone());
        }
        h.pipeline.submit(&app, false).await.unwrap();
    }
    // A crash in the middle: in-flight deliveries go back to their queues and are redelivered,
    // so parties see some requests again (with the same keys). "The middle": a quarter of the
    // cases have been taken in.
    eventually(
        Duration::from_secs(120),
        "a quarter of the cases under way",
        || async { states(&h, &run).await.len() >= 25 },
    )
    .await;
    h.running.take().unwrap().abort().await;
    h.running = Some(h.pipeline.spawn(&WORKERS).unwrap());

    let started = std::time::Instant::now();
    loop {
        let s = states(&h, &run).await;
        if s.len() == 100 && s.iter().all(|(app, st)| expected[app] == st) {
            break;
        }
        // the applicants asked for a correction fix their signature and resubmit
        for (id, st) in &s {
            if st == "correction_requested"
                && let Some(mut fixed) = corrections.remove(id)
            {
                fixed["materials"]["signature"]["sha256"] = json!("cd".repeat(32));
                h.pipeline.submit(&fixed, true).await.unwrap();
            }
        }
        if started.elapsed() > Duration::from_secs(180) {
            let mut by_state: HashMap<&str, usize> = HashMap::new();
            for st in s.values() {
                *by_state.entry(st).or_default() += 1;
            }
            let stuck = s
                .iter()
                .find(|(app, st)| expected[*app] != *st)
                .map(|(a, _)| a.clone());
            let timeline = match &stuck {
                Some(a) => case_json(&h, a).await.to_string(),
                None => String::new(),
            };
            panic!(
                "cases not final after 180 s: {} cases, by state {by_state:?}; one: {timeline}",
                s.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    quiesce(&h.pipeline).await;

    let store = &h.pipeline.runtime.store;
    assert_eq!(
        h.fakes
            .state
            .bad_signatures
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    // One effect at each party per (case, purpose), and it is the one wangban recorded.
    for (party, purpose, suffix, field, answer_field) in [
        (
            "payment",
            "payment_order",
            "fee",
            "gateway_order_id",
            "order_id",
        ),
        (
            "production",
            "production_order",
            "production",
            "centre_order_id",
            "centre_order_id",
        ),
        ("courier", "shipment", "shipment", "waybill", "waybill_no"),
    ] {
        let recorded = store.effects_with_purpose(purpose).await.unwrap();
        let at_party = h.fakes.effects(party);
        assert_eq!(
            recorded.len(),
            at_party.len(),
            "{party}: wangban recorded {} orders, the party made {}",
            recorded.len(),
            at_party.len()
        );
        assert!(at_party.values().all(|n| *n == 1));
        for (case, detail) in &recorded {
            let d: Value = serde_json::from_str(detail).unwrap();
            let answer = h.fakes.answer(party, &format!("{case}:{suffix}"));
            let answer =
                answer.unwrap_or_else(|| panic!("{party}: the party made nothing for {case}"));
            assert_eq!(
                d[field], answer[answer_field],
                "{party}: wangban recorded another order than the party made"
            );
        }
        let seen = h.fakes.seen(party);
        // Every call carries the W3C trace context of its case's trace.
        for s in &seen {
            let case = s.key.split(':').next().unwrap();
            let (trace, _) = s
                .traceparent
                .as_deref()
                .and_then(wangban_domain::trace::parse_traceparent)
                .unwrap_or_else(|| panic!("{party}: a call without a valid traceparent: {s:?}"));
            assert_eq!(
                trace,
                wangban_domain::trace::TraceId::of_case(case),
                "{party}"
            );
        }
        let repeated = seen.iter().fold(HashMap::<&str, usize>::new(), |mut m, s| {
            *m.entry(s.key.as_str()).or_default() += 1;
            m
        });
        assert!(
            repeated.values().any(|n| *n > 1),
            "{party}: no request was ever repeated, so nothing was shown"
        );
    }
    let courier_cases = expected.values().filter(|e| **e == "delivered").count();
    assert_eq!(
        store.effects_with_purpose("shipment").await.unwrap().len(),
        courier_cases
    );

    // SMS: one per (case, purpose) at the gateway, the same as wangban recorded as sent; the
    // invalid numbers were refused once, recorded, and never retried.
    let sms_seen = h.fakes.seen("sms");
    let delivered_keys: HashSet<String> = h.fakes.effects("sms").into_keys().collect();
    let refused: Vec<_> = sms_seen
        .iter()
        .filter(|s| s.code == "isv.MOBILE_NUMBER_ILLEGAL")
        .collect();
    assert!(!refused.is_empty());
    // A refusal is final within its delivery; only a delivery that never committed (the crash)
    // may ask again, and is refused again: the number never gets a message.
    let refused_keys: HashSet<&str> = refused.iter().map(|r| r.key.as_str()).collect();
    for key in &refused_keys {
        let first = refused
            .iter()
            .filter(|r| r.key == *key)
            .map(|r| r.at)
            .min()
            .unwrap();
        let after: Vec<_> = sms_seen
            .iter()
            .filter(|s| s.key == *key && s.at > first)
            .collect();
        assert!(
            after.iter().all(|s| s.code == "isv.MOBILE_NUMBER_ILLEGAL"),
            "a refused number was tried again: {key} {after:?}"
        );
    }
    let mut sent_in_store = 0;
    let mut undelivered_in_store = 0;
    for app in expected.keys() {
        let c = case_json(&h, app).await;
        let timeline = c["timeline"].as_array().unwrap();
        let count = |kind: &str| timeline.iter().filter(|e| e["kind"] == kind).count();
        sent_in_store += count("sms_sent");
        undelivered_in_store += count("sms_failed");
        assert_eq!(
            count("sms_delivered"),
            count("sms_sent"),
            "{app}: every sent SMS has its receipt once"
        );
        let transitions: Vec<&str> = timeline
            .iter()
            .filter(|e| e["kind"] == "transition")
            .filter_map(|e| e["detail"]["step"].as_str())
            .collect();
        for step in ["confirm_payment", "complete_production"] {
            assert_eq!(
                transitions.iter().filter(|s| **s == step).count(),
                1,
                "{app}: {step} in {transitions:?}"
            );
        }
    }
    assert_eq!(
        sent_in_store,
        delivered_keys.len(),
        "SMS sent per wangban vs at the gateway"
    );
    assert_eq!(undelivered_in_store, refused_keys.len());

    // Throttling obeyed: after a 429 with Retry-After: 1, that key waited at least a second;
    // after 5xx and rate-limit codes, it was tried again and got through.
    let all: Vec<_> = ["sms", "payment", "production", "courier"]
        .iter()
        .flat_map(|p| h.fakes.seen(p))
        .collect();
    let throttled: Vec<_> = all.iter().filter(|s| s.status == 429).collect();
    assert_eq!(throttled.len(), 5);
    for t in &throttled {
        let next = all
            .iter()
            .filter(|s| s.party == t.party && s.key == t.key && s.at > t.at)
            .map(|s| s.at)
            .min();
        let next =
            next.unwrap_or_else(|| panic!("{} {} was never retried after 429", t.party, t.key));
        assert!(
            next - t.at >= Duration::from_millis(990),
            "{} retried {:?} after a 429 asking for 1 s",
            t.party,
            next - t.at
        );
    }
    for failed in all
        .iter()
        .filter(|s| s.status == 503 || s.status == 0 || s.code == "isv.BUSINESS_LIMIT_CONTROL")
    {
        assert!(
            all.iter().any(|s| s.party == failed.party
                && s.key == failed.key
                && s.status == 200
                && (s.code == "OK" || s.code == "isv.MOBILE_NUMBER_ILLEGAL")),
            "{} {} failed ({}) and never got a final answer",
            failed.party,
            failed.key,
            failed.status
        );
    }

    // The invariant checker agrees.
    let verified = wangban::verify::check(
        store,
        &h.pipeline.topology.workers,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert!(verified.violations.is_empty(), "{:?}", verified.violations);
    h.running.take().unwrap().stop().await;
    h.env.cleanup(&h.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_callbacks_refuse_bad_signatures_stale_times_and_replays_and_keep_money_for_refund()
{
    let mut h = start_silent("http_callbacks", Duration::from_secs(600), "payment").await;
    h.fakes.set(
        "courier",
        Knobs {
            no_callbacks: true,
            ..Knobs::default()
        },
    );
    let run = format!("CB{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let app = demo::application(&run, 0, Scenario::PassportCourier, &mut Rng::new(3));
    let app_id = app["application_id"].as_str().unwrap().to_owned();
    let case = h.pipeline.submit(&app, false).await.unwrap().to_string();
    eventually(
        Duration::from_secs(30),
        "the case to await payment",
        || async {
            states(&h, &run).await.get(&app_id).map(String::as_str) == Some("awaiting_payment")
        },
    )
    .await;
    let url = format!("{}/callbacks/payment", h.api);
    let now = wangban_providers::signing::unix_now();
    let order = recorded(&h, &case, "payment_order", "gateway_order_id").await;
    let pay_for = |order: &str, amount: u32, id: &str| {
        json!({"out_trade_no": format!("{case}:fee"), "order_id": order, "payment_id": id, "amount_cny": amount, "status": "succeeded"}).to_string()
    };
    let pay = |amount: u32, id: &str| pay_for(&order, amount, id);
    let fee_body = pay(120, "PAY-OK-1");

    // Refused, nothing changed: a wrong secret, a stale timestamp, an unknown key id, a bad body.
    let (s, body) = signed_post(
        &url,
        KEY_ID,
        "not the shared secret at all",
        fee_body.as_bytes(),
        now,
        "n-bad",
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("signature does not match"), "{body}");
    let (s, body) = signed_post(
        &url,
        KEY_ID,
        SECRET,
        fee_body.as_bytes(),
        now - 600,
        "n-stale",
    )
    .await;
    assert_eq!(s, 401, "{body}");
    assert!(body.contains("timestamp"), "{body}");
    let (s, _) = signed_post(
        &url,
        "someone-else",
        SECRET,
        fee_body.as_bytes(),
        now,
        "n-key",
    )
    .await;
    assert_eq!(s, 401);
    let (s, body) = signed_post(
        &url,
        KEY_ID,
        SECRET,
        br#"{"out_trade_no":"x"}"#,
        now,
        "n-body",
    )
    .await;
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("order_id"), "{body}");
    let (s, _) = signed_post(
        &format!("{}/callbacks/courier", h.api),
        KEY_ID,
        "wrong secret, wrong secret",
        b"{}",
        now,
        "n-c",
    )
    .await;
    assert_eq!(s, 401);
    wangban_tests::quiesce(&h.pipeline).await; // what could have moved, has
    assert_eq!(states(&h, &run).await[&app_id], "awaiting_payment");

    // A wrong amount is taken and kept for refund; the case still awaits its fee.
    let (s, body) = signed_post(
        &url,
        KEY_ID,
        SECRET,
        pay(1, "PAY-WRONG-1").as_bytes(),
        now,
        "n-wrong",
    )
    .await;
    assert_eq!(s, 200, "{body}");
    // The fee, for another order than the case's: kept for refund; the case still waits.
    let other = pay_for("ORD-NOT-OURS", 120, "PAY-OTHER-1");
    let (s, body) = signed_post(&url, KEY_ID, SECRET, other.as_bytes(), now, "n-other").await;
    assert_eq!(s, 200, "{body}");
    // Money for no case we know: recorded for refund, acknowledged.
    let stray = json!({"out_trade_no": "case_000000000000000000000000:fee", "order_id": "ORD-STRAY", "payment_id": "PAY-STRAY-1", "amount_cny": 120, "status": "succeeded"}).to_string();
    let (s, body) = signed_post(&url, KEY_ID, SECRET, stray.as_bytes(), now, "n-stray").await;
    assert_eq!(s, 200, "{body}");
    assert!(body.contains("\"recorded_for_refund\":1"), "{body}");

    // The right payment, then its replay (refused), then the gateway's duplicate (idempotent).
    let (s, body) = signed_post(&url, KEY_ID, SECRET, fee_body.as_bytes(), now, "n-pay").await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = signed_post(&url, KEY_ID, SECRET, fee_body.as_bytes(), now, "n-pay").await;
    assert_eq!(s, 409, "{body}");
    let (s, _) = signed_post(
        &url,
        KEY_ID,
        SECRET,
        fee_body.as_bytes(),
        now + 1,
        "n-pay-again",
    )
    .await;
    assert_eq!(s, 200);
    eventually(
        Duration::from_secs(60),
        "the case to be shipped",
        || async { states(&h, &run).await.get(&app_id).map(String::as_str) == Some("shipped") },
    )
    .await;
    let c = case_json(&h, &app_id).await;
    let confirms = c["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"]["step"] == "confirm_payment")
        .count();
    assert_eq!(confirms, 1);

    // What the operators see.
    let (s, body) = http(
        "GET",
        &format!("{}/api/ops/cases/{app_id}/payment", h.api),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(p["status"], "paid", "{p}");
    assert_eq!(p["payments"].as_array().unwrap().len(), 3, "{p}");
    assert_eq!(p["refunds_due"][0]["payment_id"], "PAY-WRONG-1", "{p}");
    assert_eq!(p["refunds_due"][1]["payment_id"], "PAY-OTHER-1", "{p}");
    assert_eq!(p["payments"][1]["outcome"], "other_order_for_refund", "{p}");
    let (s, body) = http(
        "GET",
        &format!("{}/api/ops/refunds", h.api),
        Some(OPERATOR),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        r["unmatched_payments"][0]["payment_id"], "PAY-STRAY-1",
        "{r}"
    );
    assert_eq!(
        r["unmatched_payments"][0]["reference"], "case_000000000000000000000000:fee",
        "the stray payment is kept under the reference it came with: {r}"
    );
    assert_eq!(r["refunds_due"][0]["payment_id"], "PAY-WRONG-1", "{r}");
    let (s, _) = http("GET", &format!("{}/api/ops/refunds", h.api), None, None).await;
    assert_eq!(s, 401);

    // Courier: a report for no order of ours is refused; a failed delivery goes to the
    // operators' queue and leaves the case shipped; delivered ends it; a late, stale
    // `in_transit` changes nothing.
    let courier = format!("{}/callbacks/courier", h.api);
    let waybill = recorded(&h, &case, "shipment", "waybill").await;
    let report = |status: &str| {
        json!({"order_id": format!("{case}:shipment"), "waybill_no": waybill, "status": status})
            .to_string()
    };
    let unknown = json!({"order_id": "case_000000000000000000000000:shipment", "waybill_no": "SF1", "status": "delivered"}).to_string();
    let (s, _) = signed_post(
        &courier,
        KEY_ID,
        SECRET,
        unknown.as_bytes(),
        now,
        "n-unknown",
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = signed_post(
        &courier,
        KEY_ID,
        SECRET,
        report("failed_delivery").as_bytes(),
        now,
        "n-fail",
    )
    .await;
    assert_eq!(s, 200);
    let problems = || async {
        ops_get(&h, "/api/ops/delivery-problems").await["open"]
            .as_array()
            .unwrap()
            .len()
    };
    eventually(
        Duration::from_secs(30),
        "the failed delivery in the operators' queue",
        || async { problems().await == 1 },
    )
    .await;
    assert_eq!(states(&h, &run).await[&app_id], "shipped");
    let (s, _) = signed_post(
        &courier,
        KEY_ID,
        SECRET,
        report("delivered").as_bytes(),
        now,
        "n-delivered",
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = signed_post(
        &courier,
        KEY_ID,
        SECRET,
        report("in_transit").as_bytes(),
        now,
        "n-late",
    )
    .await;
    assert_eq!(s, 200);
    eventually(
        Duration::from_secs(30),
        "the case to be delivered",
        || async { states(&h, &run).await.get(&app_id).map(String::as_str) == Some("delivered") },
    )
    .await;
    quiesce(&h.pipeline).await;
    assert_eq!(states(&h, &run).await[&app_id], "delivered");
    assert_eq!(
        problems().await,
        0,
        "a delivered case leaves the operators' queue"
    );
    let (_, metrics) = http("GET", &format!("{}/metrics", h.api), None, None).await;
    assert!(
        metrics
            .contains("wangban_callbacks_total{party=\"payment\",outcome=\"refused_signature\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("wangban_callbacks_total{party=\"payment\",outcome=\"refused_replay\"} 1"),
        "{metrics}"
    );
    h.running.take().unwrap().stop().await;
    // Had the case's fee order been another, `wangban verify` would flag the payment.
    let store = &h.pipeline.runtime.store;
    let workers = &h.pipeline.topology.workers;
    let flagged = |v: &wangban::verify::Verification| {
        v.violations
            .iter()
            .filter(|v| v.contains(&case) && v.contains("payment confirmed"))
            .count()
    };
    let grace = Duration::from_secs(3600);
    let clean = wangban::verify::check(store, workers, grace).await.unwrap();
    assert_eq!(flagged(&clean), 0, "{:?}", clean.violations);
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&h.env.settings.database_url)
            .await
            .unwrap();
        let other = r#"{"amount_cny":120,"gateway_order_id":"ORD-OTHER"}"#;
        sqlx::query(
            "UPDATE effects SET detail = $1 WHERE case_id = $2 AND purpose = 'payment_order'",
        )
        .bind(other)
        .bind(&case)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let tampered = wangban::verify::check(store, workers, grace).await.unwrap();
    assert_eq!(flagged(&tampered), 1, "{:?}", tampered.violations);
    h.env.cleanup(&h.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_after_the_window_closed_is_kept_for_refund() {
    let mut h = start_silent("http_late_payment", Duration::from_secs(3), "payment").await;
    let run = format!("LATE{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let app = demo::application(&run, 0, Scenario::PassportCourier, &mut Rng::new(5));
    let app_id = app["application_id"].as_str().unwrap().to_owned();
    let case = h.pipeline.submit(&app, false).await.unwrap().to_string();
    eventually(
        Duration::from_secs(60),
        "the payment window to close",
        || async {
            states(&h, &run).await.get(&app_id).map(String::as_str) == Some("payment_expired")
        },
    )
    .await;
    let order = recorded(&h, &case, "payment_order", "gateway_order_id").await;
    let body = json!({"out_trade_no": format!("{case}:fee"), "order_id": order, "payment_id": "PAY-LATE-1", "amount_cny": 120, "status": "succeeded"}).to_string();
    let now = wangban_providers::signing::unix_now();
    let (s, answer) = signed_post(
        &format!("{}/callbacks/payment", h.api),
        KEY_ID,
        SECRET,
        body.as_bytes(),
        now,
        "n-late-pay",
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    let url = format!("{}/api/ops/cases/{app_id}/payment", h.api);
    eventually(
        Duration::from_secs(30),
        "the late payment to be kept for refund",
        || async {
            let (_, body) = http("GET", &url, Some(OPERATOR), None).await;
            let p: Value = serde_json::from_str(&body).unwrap_or_default();
            p["refunds_due"][0]["payment_id"] == "PAY-LATE-1"
        },
    )
    .await;
    let (_, body) = http("GET", &url, Some(OPERATOR), None).await;
    let p: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        p["refunds_due"][0]["why"], "payment after the window closed",
        "{p}"
    );
    assert_eq!(
        p["payments"][0]["outcome"], "after_expiry_for_refund",
        "{p}"
    );
    assert_eq!(p["status"], "expired", "{p}");
    assert_eq!(states(&h, &run).await[&app_id], "payment_expired");
    h.running.take().unwrap().stop().await;
    h.env.cleanup(&h.pipeline).await;
}

/// The centre answers after the 3-working-day promise: the order's recorded due date is moved
/// into the past (time passing, as the calendar counts it) before the centre's signed callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_production_order_completed_after_its_due_date_is_listed_and_counted() {
    let mut h = start_silent(
        "http_late_production",
        Duration::from_secs(600),
        "production",
    )
    .await;
    let run = format!("LPRD{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mut rng = Rng::new(8);
    let late = demo::application(&run, 0, Scenario::PassportCourier, &mut rng);
    let late_id = late["application_id"].as_str().unwrap().to_owned();
    let case = h.pipeline.submit(&late, false).await.unwrap().to_string();
    eventually(
        Duration::from_secs(60),
        "the order to be placed",
        || async {
            states(&h, &run).await.get(&late_id).map(String::as_str) == Some("in_production")
        },
    )
    .await;
    let order = h
        .fakes
        .answer("production", &format!("{case}:production"))
        .expect("the centre took the order");
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&h.env.settings.database_url)
            .await
            .unwrap();
        let detail = json!({"centre_order_id": order["centre_order_id"], "due": "2026-01-05"});
        let done = sqlx::query(
            "UPDATE effects SET detail = $1 WHERE case_id = $2 AND purpose = 'production_order'",
        )
        .bind(detail.to_string())
        .bind(&case)
        .execute(&mut conn)
        .await
        .unwrap();
        assert_eq!(done.rows_affected(), 1, "one production order recorded");
        let _ = conn.close().await;
    }
    let body = json!({"order_id": format!("{case}:production"), "centre_order_id": order["centre_order_id"],
                      "status": "produced", "document_number": "E87654321"})
    .to_string();
    let now = wangban_providers::signing::unix_now();
    let (s, answer) = signed_post(
        &format!("{}/callbacks/production", h.api),
        KEY_ID,
        SECRET,
        body.as_bytes(),
        now,
        "n-late-production",
    )
    .await;
    assert_eq!(s, 200, "{answer}");

    // A second case, produced on time, is not listed.
    h.fakes.set("production", Knobs::default());
    let on_time = demo::application(&run, 1, Scenario::PassportCourier, &mut rng);
    let on_time_id = on_time["application_id"].as_str().unwrap().to_owned();
    h.pipeline.submit(&on_time, false).await.unwrap();
    wait_all_in(&h, &run, &[&late_id, &on_time_id], "delivered").await;

    let sla = ops_get(&h, "/api/ops/sla").await;
    assert_eq!(sla["production_completed_late"], json!([case]), "{sla}");
    let (_, metrics) = http("GET", &format!("{}/metrics/store", h.api), None, None).await;
    assert!(
        metrics.contains("\nwangban_production_completed_late_total 1\n"),
        "{metrics}"
    );
    let timeline = case_json(&h, &late_id).await;
    assert!(
        timeline.to_string().contains("\"late\":true"),
        "the transition records the lateness: {timeline}"
    );
    h.running.take().unwrap().stop().await;
    h.env.cleanup(&h.pipeline).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_the_courier_brings_back_goes_to_the_hall_of_the_household_registration() {
    let mut h = start_silent("http_returned", Duration::from_secs(600), "courier").await;
    let run = format!("RETN{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mut rng = Rng::new(9);
    let refused = demo::application(&run, 0, Scenario::PassportCourier, &mut rng);
    let attempted = demo::application(&run, 1, Scenario::PassportCourier, &mut rng);
    let mut ids = Vec::new();
    for app in [&refused, &attempted] {
        let case = h.pipeline.submit(app, false).await.unwrap().to_string();
        ids.push((app["application_id"].as_str().unwrap().to_owned(), case));
    }
    let ((refused_id, refused_case), (attempted_id, attempted_case)) =
        (ids[0].clone(), ids[1].clone());
    wait_all_in(&h, &run, &[&refused_id, &attempted_id], "shipped").await;
    let courier = format!("{}/callbacks/courier", h.api);
    let now = wangban_providers::signing::unix_now();
    let waybills = [
        (
            refused_case.clone(),
            recorded(&h, &refused_case, "shipment", "waybill").await,
        ),
        (
            attempted_case.clone(),
            recorded(&h, &attempted_case, "shipment", "waybill").await,
        ),
    ];
    let report = |case: &str, status: &str| {
        let waybill = &waybills.iter().find(|(c, _)| c == case).unwrap().1;
        json!({"order_id": format!("{case}:shipment"), "waybill_no": waybill, "status": status})
            .to_string()
    };

    // Refused at the door (到付): the courier brings it back.
    let (s, body) = signed_post(
        &courier,
        KEY_ID,
        SECRET,
        report(&refused_case, "returned").as_bytes(),
        now,
        "n-returned",
    )
    .await;
    assert_eq!(s, 200, "{body}");

    // Failed attempts: in the operators' queue with its action, until an operator acts.
    let (s, _) = signed_post(
        &courier,
        KEY_ID,
        SECRET,
        report(&attempted_case, "failed_delivery").as_bytes(),
        now,
        "n-failed",
    )
    .await;
    assert_eq!(s, 200);
    let queue = || ops_get(&h, "/api/ops/delivery-problems");
    eventually(
        Duration::from_secs(30),
        "the failed delivery in the operators' queue",
        || async { queue().await["open"].as_array().unwrap().len() == 1 },
    )
    .await;
    let q = queue().await;
    assert_eq!(q["open"][0]["case_id"], attempted_case.as_str(), "{q}");
    let action = q["open"][0]["actions"][0].as_str().unwrap().to_owned();
    assert_eq!(
        action,
        format!("POST /api/ops/cases/{attempted_case}/return-to-hall")
    );
    let path = action.trim_start_matches("POST ").to_owned();
    let post = |path: String, token: Option<&'static str>| {
        let url = format!("{}{path}", h.api);
        async move { http("POST", &url, token, Some("")).await }
    };
    let (s, _) = post(path.clone(), None).await;
    assert_eq!(s, 401, "operators only");
    let (s, body) = post(path.clone(), Some(OPERATOR)).await;
    assert_eq!(s, 202, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["waybill"].as_str().is_some_and(|w| !w.is_empty()),
        "the booked waybill goes with it: {answer}"
    );
    let unknown = "/api/ops/cases/case_000000000000000000000000/return-to-hall";
    let (s, _) = post(unknown.into(), Some(OPERATOR)).await;
    assert_eq!(s, 404);

    // Both reach the hall of their household registration and are collected there; each
    // applicant is told it came back (and, unless already collected, where to collect it).
    wait_all_in(&h, &run, &[&refused_id, &attempted_id], "collected").await;
    let (s, body) = post(path, Some(OPERATOR)).await;
    assert_eq!(s, 409, "a collected document cannot be returned: {body}");
    let store = &h.pipeline.runtime.store;
    wangban_tests::wait_effects(store, "sms:returned", 2).await;
    for id in [&refused_id, &attempted_id] {
        let steps: Vec<String> = case_json(&h, id).await["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "transition")
            .filter_map(|e| e["detail"]["step"].as_str().map(str::to_owned))
            .collect();
        let tail: Vec<&str> = steps
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            ["ship", "return_delivery", "announce_pickup", "collect"],
            "{id}: {steps:?}"
        );
    }
    assert!(queue().await["open"].as_array().unwrap().is_empty());
    quiesce(&h.pipeline).await;
    let verified = wangban::verify::check(store, &h.pipeline.topology.workers, Duration::ZERO)
        .await
        .unwrap();
    assert!(verified.violations.is_empty(), "{:?}", verified.violations);
    h.running.take().unwrap().stop().await;
    h.env.cleanup(&h.pipeline).await;
}

/// The policy's promise, 7 working days from acceptance to issue: a case accepted before the
/// National Day holiday and still in production is listed, in `/metrics` and in its case view;
/// one accepted today is not. (Time passing is its recorded transitions moved back to
/// 30 Sep 2026; the holiday arithmetic itself is `wangban_domain::promise`'s table tests.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_past_the_seven_working_day_promise_is_listed() {
    let mut h = start_silent("http_promise", Duration::from_secs(600), "production").await;
    let run = format!("PROM{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let mut rng = Rng::new(10);
    let mut ids = Vec::new();
    for n in 0..2 {
        let app = demo::application(&run, n, Scenario::PassportCourier, &mut rng);
        let case = h.pipeline.submit(&app, false).await.unwrap().to_string();
        ids.push((app["application_id"].as_str().unwrap().to_owned(), case));
    }
    let (old_id, old_case) = ids[0].clone();
    let (new_id, new_case) = ids[1].clone();
    wait_all_in(&h, &run, &[&old_id, &new_id], "in_production").await;
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&h.env.settings.database_url)
            .await
            .unwrap();
        // Noon, Beijing time, on Wednesday 30 Sep 2026.
        let before_the_holiday: i64 = 1_790_740_800_000;
        let moved =
            sqlx::query("UPDATE audit SET at = $1 WHERE case_id = $2 AND kind = 'transition'")
                .bind(before_the_holiday)
                .bind(&old_case)
                .execute(&mut conn)
                .await
                .unwrap();
        assert!(
            moved.rows_affected() >= 5,
            "the case's transitions moved back"
        );
        let _ = conn.close().await;
    }
    let sla = ops_get(&h, "/api/ops/sla").await;
    let listed: Vec<&str> = sla["approval_and_issue"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(listed.contains(&old_case.as_str()), "{sla}");
    assert!(!listed.contains(&new_case.as_str()), "{sla}");
    let (_, metrics) = http("GET", &format!("{}/metrics/store", h.api), None, None).await;
    assert!(
        metrics.contains(&format!(
            "wangban_sla_breaches{{sla=\"approval_and_issue\"}} {}",
            listed.len()
        )),
        "{metrics}"
    );
    let old = case_json(&h, &old_id).await;
    assert_eq!(old["promise"]["broken"], true, "{}", old["promise"]);
    assert_eq!(old["promise"]["completed"], false);
    assert!(old["promise"]["counted"].as_u64().unwrap() > 7);
    let new = case_json(&h, &new_id).await;
    assert_eq!(new["promise"]["broken"], false, "{}", new["promise"]);
    assert!(new["promise"]["counted"].as_u64().unwrap() <= 1);
    h.running.take().unwrap().stop().await;
    h.env.cleanup(&h.pipeline).await;
}
