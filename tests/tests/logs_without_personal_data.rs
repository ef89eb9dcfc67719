//! A case with a known ID number, name, phone and address goes through the whole pipeline in a
//! `wangban serve` process at debug level; no log line carries any of them, while every line of a
//! message's handling carries the case id, event id and correlation id.

use serde_json::{Value, json};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;
use wangban::demo::{Rng, Scenario, application};
use wangban::pipeline::Pipeline;
use wangban_tests::{RealServices, eventually, free_port, http, wangban_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_personal_data_in_any_log_line() {
    let env = RealServices::new("pii").await;
    let port = free_port();
    let mut app = application("PII", 1, Scenario::PassportCourier, &mut Rng::new(77));
    let pii = [
        "11010519900307128X",
        "王小明测试",
        "13912345678",
        "测试路 88 号",
        "E55667788",
    ];
    app["applicant"]["id_number"] = json!(pii[0]);
    app["applicant"]["name"] = json!(pii[1]);
    app["applicant"]["phone"] = json!(pii[2]);
    app["delivery"]["recipient"] = json!(pii[1]);
    app["delivery"]["phone"] = json!(pii[2]);
    app["delivery"]["address"]["street"] = json!(pii[3]);
    app["document"]["number"] = json!(pii[4]);
    let mut broken = app.clone();
    broken["application_id"] = json!("PII-BROKEN-1");
    broken["applicant"]["category"] = json!("vip"); // malformed: dead-lettered, PII in its body
    let dir = std::env::temp_dir().join(format!("wangban-pii-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("good.json"), app.to_string()).unwrap();
    std::fs::write(dir.join("broken.json"), broken.to_string()).unwrap();

    let s = &env.settings;
    let amqp = s.amqp_url.clone().unwrap();
    let with_env = |c: &mut Command| {
        c.env("AMQP_URL", &amqp)
            .env("DATABASE_URL", &s.database_url)
            .env("WANGBAN_QUEUE_PREFIX", &s.queue_prefix)
            .env("WANGBAN_SIM_DELAY_MS", "5")
            .env("WANGBAN_OPERATOR_TOKEN", "pii-test-operator-token")
            .env("RUST_LOG", "debug");
    };
    let mut serve = Command::new(wangban_binary());
    serve
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    with_env(&mut serve);
    let mut child = serve.spawn().expect("wangban serve starts");
    // Drain stderr as it comes: a full pipe would block the server.
    let mut stderr = child.stderr.take().unwrap();
    let drain = std::thread::spawn(move || {
        let mut all = String::new();
        stderr.read_to_string(&mut all).unwrap();
        all
    });
    eventually(Duration::from_secs(30), "serve to be ready", || async {
        http(
            "GET",
            &format!("http://127.0.0.1:{port}/readyz"),
            None,
            None,
        )
        .await
        .0 == 200
    })
    .await;

    let mut submit = Command::new(wangban_binary());
    submit
        .args(["submit"])
        .arg(dir.join("good.json"))
        .arg(dir.join("broken.json"));
    with_env(&mut submit);
    let submitted = submit.output().unwrap();
    assert!(
        submitted.status.success(),
        "{}",
        String::from_utf8_lossy(&submitted.stderr)
    );

    let reader = Pipeline::open(&env.settings).await.unwrap();
    let store = reader.runtime.store.clone();
    eventually(
        Duration::from_secs(60),
        "the case to be delivered and the broken one dead-lettered",
        || async {
            store
                .states_by_application("PII-")
                .await
                .unwrap()
                .values()
                .any(|s| s == "delivered")
                && !store.dead_letters(Some("intake")).await.unwrap().is_empty()
        },
    )
    .await;
    let (_, metrics) = http(
        "GET",
        &format!("http://127.0.0.1:{port}/metrics"),
        None,
        None,
    )
    .await;

    // SIGTERM: graceful stop within the deadline.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "serve did not stop within 30 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "serve exited with {status}");
    let mut logs = drain.join().unwrap();
    logs.push_str(&String::from_utf8_lossy(&submitted.stderr));

    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.len() > 50,
        "expected a busy debug log, got {} lines",
        lines.len()
    );
    for (i, line) in lines.iter().enumerate() {
        for p in pii {
            assert!(
                !line.contains(p),
                "log line {i} carries personal data {p:?}: {line}"
            );
        }
        // Values a shipper can use as they are: no Rust debug renderings of options or lists,
        // and no list packed into a string: every field a JSON scalar or object.
        assert!(
            !line.contains("\"Some(") && !line.contains("\"[\\\""),
            "log line {i} carries a debug-formatted value: {line}"
        );
        if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(line) {
            for (name, value) in &fields {
                // `intake,review`: names joined by commas
                let packed = value.as_str().is_some_and(|v| {
                    v.contains(',')
                        && v.split(',').all(|w| {
                            !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        })
                });
                assert!(
                    !packed,
                    "log line {i}: field {name} packs a list into a string: {line}"
                );
            }
        }
        // Masked, the number's digits would still be findable in pieces: the birth date must not leak.
        assert!(
            !line.contains("19900307"),
            "log line {i} carries a birth date: {line}"
        );
    }
    for p in pii {
        assert!(!metrics.contains(p));
    }
    // Every line of a message's handling names the case, the event and the correlation.
    let handled: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["span"]["name"] == "handle")
        .collect();
    assert!(
        handled.len() >= 10,
        "expected lines from message handling, got {}",
        handled.len()
    );
    for v in &handled {
        for field in [
            "case_id",
            "event_id",
            "correlation_id",
            "event_type",
            "worker",
        ] {
            assert!(
                v["span"][field].is_string(),
                "a handling line lacks {field}: {v}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    env.cleanup(&reader).await;
}
