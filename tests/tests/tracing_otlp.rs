//! One case is one trace: `wangban serve` with `OTEL_EXPORTER_OTLP_ENDPOINT` exports OTLP/JSON
//! spans to a receiver in this test; every hop of the case through the five workers and every
//! call to a party is a span of the case's trace, each parented on a span of the same trace, and
//! no attribute carries the applicant's personal data.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::{Pipeline, WORKERS};
use wangban_domain::trace::TraceId;
use wangban_tests::{RealServices, eventually};

type Received = Arc<Mutex<Vec<Value>>>;

async fn traces(State(received): State<Received>, body: String) -> &'static str {
    let v: Value = serde_json::from_str(&body).expect("the exporter posts JSON");
    received.lock().unwrap().push(v);
    "{}"
}

/// Every span received, as (resource service name, span).
fn received_spans(received: &Received) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for request in received.lock().unwrap().iter() {
        for rs in request["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for span in ss["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

fn attr<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_case_is_one_trace_across_the_five_workers_and_the_parties() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(traces))
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut env = RealServices::new("otlp").await;
    env.settings.otlp = Some(wangban::otlp::OtlpConfig {
        traces_url: format!("http://{addr}/v1/traces"),
        service_name: "wangban-test".into(),
    });
    let (stop, rx) = watch::channel(false);
    let settings = env.settings.clone();
    let server = tokio::spawn(async move { wangban::serve::run(&settings, &WORKERS, rx).await });
    let client = Pipeline::connect(&env.settings).await.unwrap();
    let run = format!("OTL{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let app = application(&run, 1, Scenario::PassportCourier, &mut Rng::new(11));
    let case = client.submit(&app, false).await.unwrap().to_string();
    eventually(
        Duration::from_secs(90),
        "the case to be delivered",
        || async {
            client
                .runtime
                .store
                .states_by_application(&run)
                .await
                .unwrap()
                .values()
                .any(|s| s == "delivered")
        },
    )
    .await;

    // The spans of the case's trace: a hop of each worker and a call to each party it needs.
    let trace = TraceId::of_case(&case).hex();
    let of_case = || -> Vec<Value> {
        received_spans(&received)
            .into_iter()
            .filter(|(_, s)| s["traceId"] == trace.as_str())
            .map(|(_, s)| s)
            .collect()
    };
    let parties = ["sms", "payment", "production", "courier", "desk"];
    // (Spans are exported as they end, so the last ones may still be on their way: wait until
    // every parent named has arrived too.)
    eventually(
        Duration::from_secs(30),
        "spans of every worker and party, and of every parent they name",
        || async {
            let spans = of_case();
            let workers: HashSet<&str> = spans
                .iter()
                .filter_map(|s| attr(s, "wangban.worker"))
                .collect();
            let called: HashSet<&str> = spans
                .iter()
                .filter_map(|s| attr(s, "wangban.party"))
                .collect();
            let ids: HashSet<&str> = spans.iter().filter_map(|s| s["spanId"].as_str()).collect();
            WORKERS.iter().all(|w| workers.contains(w))
                && parties.iter().all(|p| called.contains(p))
                && spans
                    .iter()
                    .filter_map(|s| s["parentSpanId"].as_str())
                    .all(|p| ids.contains(p))
        },
    )
    .await;
    let spans = of_case();
    let ids: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["spanId"].as_str().unwrap(), s))
        .collect();
    // One root — the submission's hop in intake — and every other span's parent in the trace.
    let roots: Vec<&Value> = spans
        .iter()
        .filter(|s| s.get("parentSpanId").is_none())
        .collect();
    let root_names: Vec<&str> = roots.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(
        root_names.contains(&"intake application.submitted"),
        "{root_names:?}"
    );
    for s in &spans {
        if let Some(parent) = s["parentSpanId"].as_str() {
            assert!(
                ids.contains_key(parent),
                "{} has a parent outside the trace",
                s["name"]
            );
        }
        assert!(s["endTimeUnixNano"].as_str().unwrap() >= s["startTimeUnixNano"].as_str().unwrap());
    }
    // A party's call hangs under the hop that asked for it, and its answer's hop under the call.
    let payment_call = spans
        .iter()
        .find(|s| attr(s, "wangban.party") == Some("payment"))
        .unwrap();
    let asked = ids[payment_call["parentSpanId"].as_str().unwrap()];
    assert_eq!(attr(asked, "wangban.worker"), Some("notify"));
    let answered = spans
        .iter()
        .find(|s| s["parentSpanId"] == payment_call["spanId"])
        .expect("the payment order's answer is handled under the call");
    assert_eq!(attr(answered, "wangban.worker"), Some("notify"));
    // The exporter's resource names the service; no personal data anywhere in what it sent.
    assert!(
        received_spans(&received)
            .iter()
            .all(|(svc, _)| svc == "wangban-test")
    );
    let everything = serde_json::to_string(&*received.lock().unwrap()).unwrap();
    for field in [
        &app["applicant"]["id_number"],
        &app["applicant"]["name"],
        &app["applicant"]["phone"],
    ] {
        let value = field.as_str().unwrap();
        assert!(!everything.contains(value), "personal data in the spans");
    }

    stop.send(true).unwrap();
    server.await.unwrap().unwrap();
    env.cleanup(&client).await;
}
