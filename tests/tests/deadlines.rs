//! Deadlines on a controlled clock, on RabbitMQ and PostgreSQL: the payment window's reminder and
//! lapse are scheduled with the fee request and fire when the clock passes their time — the
//! policy's days, moved through in seconds with no sleep — and a process that starts while a case
//! is already waiting (an upgrade from a version that scanned instead) schedules them again. A
//! payment report forged on the bus for another order than the case's moves nothing.

use serde_json::Value;
use std::time::Duration;
use wangban::demo::{self, Rng, Scenario};
use wangban_domain::clock::Clock;
use wangban_tests::{RealServices, Served, eventually, http};

const OPERATOR: &str = "deadlines-operator-token";
const DAY: Duration = Duration::from_secs(86_400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_window_reminds_and_lapses_when_the_clock_passes_it() {
    let clock = Clock::controlled_now();
    let mut env = RealServices::new("deadlines").await;
    env.settings.clock = clock.clone();
    env.settings.operator_token = Some(wangban::settings::Secret::new(OPERATOR));
    // The policy's windows, not a test's seconds.
    env.settings.fees.reminder_after = 3 * DAY;
    env.settings.fees.payment_window = 7 * DAY;
    let d = Served::start(env).await;
    let app = demo::application("DEADL", 1, Scenario::Unpaid, &mut Rng::new(5));
    let case = d.client.submit(&app, false).await.unwrap().to_string();
    let view = || async {
        let url = format!("{}/api/ops/cases/{case}", d.base);
        let (status, body) = http("GET", &url, Some(OPERATOR), None).await;
        match status {
            404 => Value::Null, // not taken in yet
            _ => {
                assert_eq!(status, 200, "{body}");
                serde_json::from_str::<Value>(&body).unwrap()
            }
        }
    };
    let deadlines = |v: &Value| -> Vec<(String, i64)> {
        v["deadlines"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                (
                    d["routing_key"].as_str().unwrap().to_owned(),
                    d["due_at"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    eventually(
        Duration::from_secs(60),
        "the case to await payment with its two deadlines",
        || async {
            let v = view().await;
            v["case"]["state"] == "awaiting_payment" && deadlines(&v).len() == 2
        },
    )
    .await;
    let scheduled = deadlines(&view().await);
    assert!(scheduled.iter().all(|(key, _)| key == "payment.deadline"));
    assert_eq!(
        scheduled[1].1 - scheduled[0].1,
        4 * 86_400_000,
        "{scheduled:?}"
    );

    // A payment report forged on the bus — the fee, but for an order that is not the case's —
    // moves nothing: the money is kept for refund.
    let case_id: wangban_domain::ids::CaseId = case.parse().unwrap();
    let forged = wangban_runtime::ingress::event(
        &clock,
        wangban_domain::events::EventType::PaymentReported,
        "/somewhere",
        &case_id,
        None,
        serde_json::json!({"payment_id": "PAY-FORGED", "gateway_order_id": "ORD-MADE-UP",
                           "amount_cny": 120, "status": "succeeded"}),
    );
    d.client.runtime.queue_ingress(&forged).await.unwrap();
    let store = &d.client.runtime.store;
    eventually(
        Duration::from_secs(30),
        "the forged payment to be kept for refund",
        || async {
            let view = store.case_view(&case).await.unwrap().unwrap();
            view.audit.iter().any(|a| a.kind == "payment_unmatched")
                && view
                    .effects
                    .iter()
                    .any(|(p, _)| p == "refund_due:PAY-FORGED")
        },
    )
    .await;
    assert_eq!(view().await["case"]["state"], "awaiting_payment");

    // A process started now (this version, after one that scanned): the case's deadlines are
    // scheduled again, at the same times.
    {
        use sqlx::Connection;
        let mut conn = sqlx::AnyConnection::connect(&d.env.settings.database_url)
            .await
            .unwrap();
        let gone = sqlx::query("DELETE FROM scheduled WHERE case_id = $1")
            .bind(&case)
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(gone.rows_affected(), 2);
    }
    let started = wangban::pipeline::Pipeline::connect(&d.env.settings)
        .await
        .unwrap();
    let running = started.spawn(&["notify"]).unwrap();
    eventually(
        Duration::from_secs(30),
        "the new process to schedule the waiting case's deadlines",
        || async { deadlines(&view().await) == scheduled },
    )
    .await;
    running.stop().await;

    // Three days on: the reminder, and the window still open.
    clock.advance(3 * DAY);
    eventually(Duration::from_secs(30), "the reminder SMS", || async {
        store.effect_counts("sms:payment_reminder").await.unwrap() == 1
    })
    .await;
    let v = view().await;
    assert_eq!(v["case"]["state"], "awaiting_payment");
    assert_eq!(deadlines(&v), scheduled[1..]);
    // Four more: the window closes, with its SMS; nothing is left waiting.
    clock.advance(4 * DAY);
    eventually(
        Duration::from_secs(30),
        "the payment window to close",
        || async { view().await["case"]["state"] == "payment_expired" },
    )
    .await;
    eventually(Duration::from_secs(30), "the lapse SMS", || async {
        store.effect_counts("sms:payment_expired").await.unwrap() == 1
    })
    .await;
    assert!(deadlines(&view().await).is_empty());
    assert_eq!(
        store.effect_counts("sms:payment_reminder").await.unwrap(),
        1
    );
    d.stop().await;
}
