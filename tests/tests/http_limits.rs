//! One client cannot exhaust `wangban serve`'s HTTP surface (on RabbitMQ and PostgreSQL, the
//! binary as deployed): an idle connection is closed after the header-read timeout, a request
//! whose body never comes gets 408, and with 2,000 idle connections held open `/healthz` still
//! answers within a second while the process stays under the Kubernetes memory limit (128 MiB).
//! Unknown tokens are answered 401 with `WWW-Authenticate: Bearer`, logged and counted; an
//! address that keeps guessing gets 429 with `Retry-After`, even for the right token.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wangban_tests::{RealServices, eventually, free_port, wangban_binary};

const OPERATOR: &str = "http-limits-operator-token";
const HEADER_TIMEOUT_SECS: u64 = 3;
const POD_LIMIT_KIB: u64 = 128 * 1024;

/// Sends `request` on a new connection and reads the answer until the server closes it.
async fn raw(addr: &str, request: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return String::new(); // not listening (yet)
    };
    if s.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, token: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_client_cannot_exhaust_the_http_surface() {
    let env = RealServices::new("http_limits").await;
    let s = &env.settings;
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::env::temp_dir().join(format!("wangban-http-{}.log", uuid::Uuid::new_v4()));
    let mut child = Command::new(wangban_binary())
        .args(["serve", "--workers", "none", "--http-addr", &addr])
        .env("AMQP_URL", s.amqp_url.as_deref().unwrap())
        .env("DATABASE_URL", &s.database_url)
        .env("WANGBAN_QUEUE_PREFIX", &s.queue_prefix)
        .env("WANGBAN_OPERATOR_TOKEN", OPERATOR)
        .env(
            "WANGBAN_HTTP_HEADER_TIMEOUT_SECS",
            HEADER_TIMEOUT_SECS.to_string(),
        )
        .env("WANGBAN_HTTP_REQUEST_TIMEOUT_SECS", "2")
        .env("WANGBAN_HTTP_AUTH_FAILURES_PER_MINUTE", "5")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("wangban serve starts");
    eventually(Duration::from_secs(60), "serve to answer", || async {
        raw(&addr, &get("/healthz", "-"))
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;

    // Pages run only their own script and are framed by no one; answers are not sniffed; API
    // answers (personal data) are not cached.
    let page = raw(&addr, &get("/dashboard", "-"))
        .await
        .to_ascii_lowercase();
    assert!(page.starts_with("http/1.1 200"), "{page}");
    for header in [
        "content-security-policy: default-src 'none'; script-src 'sha256-",
        "frame-ancestors 'none'",
        "x-content-type-options: nosniff",
        "cache-control: no-store",
    ] {
        assert!(page.contains(header), "{header} missing:\n{page}");
    }
    let api = raw(&addr, &get("/api/ops/queues", OPERATOR))
        .await
        .to_ascii_lowercase();
    assert!(api.starts_with("http/1.1 200"), "{api}");
    assert!(
        api.contains("cache-control: no-store") && api.contains("x-content-type-options: nosniff"),
        "{api}"
    );

    // A NUL byte in a path or a search is refused, naming it, before the database sees it.
    let nul_path = raw(&addr, &get("/api/ops/cases/%00case", OPERATOR)).await;
    assert!(
        nul_path.starts_with("HTTP/1.1 400") && nul_path.contains("NUL"),
        "{nul_path}"
    );
    let body = r#"{"q":"case\u0000x"}"#;
    let nul_search = raw(
        &addr,
        &format!(
            "POST /api/ops/search HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {OPERATOR}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(
        nul_search.starts_with("HTTP/1.1 400") && nul_search.contains("`q`"),
        "{nul_search}"
    );

    // A framework's refusal (a body that is not JSON) is JSON like every other error.
    let broken = "{not json";
    let refused = raw(
        &addr,
        &format!(
            "POST /api/ops/search HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {OPERATOR}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{broken}",
            broken.len()
        ),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    assert!(
        refused
            .to_ascii_lowercase()
            .contains("content-type: application/json")
            && refused.contains("{\"error\":"),
        "{refused}"
    );

    // An idle connection is closed after the header-read timeout.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    let opened = Instant::now();
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(
        Duration::from_secs(HEADER_TIMEOUT_SECS + 5),
        idle.read(&mut buf),
    )
    .await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection is still open after {:?}: {closed:?}",
        opened.elapsed()
    );
    assert!(opened.elapsed() >= Duration::from_secs(HEADER_TIMEOUT_SECS - 1));

    // A body that never comes: 408 after the request timeout.
    let trickled = raw(
        &addr,
        &format!(
            "POST /api/ops/search HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {OPERATOR}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id_"
        ),
    )
    .await;
    assert!(trickled.starts_with("HTTP/1.1 408"), "{trickled}");

    // 2,000 idle connections held open: /healthz answers within a second, memory stays bounded.
    let before = rss_kib(child.id());
    let mut held = Vec::new();
    for _ in 0..2000 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    for _ in 0..5 {
        let started = Instant::now();
        let answer =
            tokio::time::timeout(Duration::from_secs(1), raw(&addr, &get("/healthz", "-")))
                .await
                .expect("/healthz answered within a second");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(1));
        eprintln!("/healthz answered in {:?}", started.elapsed());
    }
    let during = rss_kib(child.id());
    assert!(
        during < POD_LIMIT_KIB,
        "RSS {during} KiB with 2,000 connections (before: {before} KiB)"
    );
    eprintln!("RSS {before} KiB before, {during} KiB with 2,000 connections held");
    drop(held);

    // Unknown tokens: 401 with the challenge, logged, counted; then 429 for the address.
    for _ in 0..5 {
        let answer = raw(&addr, &get("/api/ops/queues", "a-guess")).await;
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(
            answer
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{answer}"
        );
    }
    let throttled = raw(&addr, &get("/api/ops/queues", OPERATOR)).await;
    assert!(throttled.starts_with("HTTP/1.1 429"), "{throttled}");
    assert!(
        throttled.to_ascii_lowercase().contains("retry-after: "),
        "{throttled}"
    );
    let metrics = raw(&addr, &get("/metrics", "-")).await;
    for line in [
        "wangban_http_auth_failures_total 5",
        "wangban_http_auth_throttled_total 1",
        "wangban_http_requests_timed_out_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from {metrics}");
    }
    assert!(metrics.contains("wangban_http_connections_evicted_total "));

    let _ = child.kill();
    let _ = child.wait();
    let mut text = String::new();
    std::fs::File::open(&log)
        .unwrap()
        .read_to_string(&mut text)
        .unwrap();
    let _ = std::fs::remove_file(&log);
    let failures = text.matches("authentication failed").count();
    assert_eq!(failures, 5, "{text}");
    // Every line is JSON with its message at the top level; every API request is in the access
    // log with its status (the query and the token are not).
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(lines.iter().all(|l| l["message"].is_string()), "{text}");
    let refused_calls = lines
        .iter()
        .filter(|l| {
            l["target"] == "wangban::access" && l["path"] == "/api/ops/queues" && l["status"] == 401
        })
        .count();
    assert_eq!(refused_calls, 5, "{text}");
    assert!(!text.contains("a-guess"), "a guessed token reached the log");
    let pipeline = wangban::pipeline::Pipeline::open(&env.settings)
        .await
        .unwrap();
    env.cleanup(&pipeline).await;
}
