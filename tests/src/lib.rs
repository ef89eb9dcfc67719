//! Helpers shared by the end-to-end tests in `tests/tests/`.
//!
//! [`RealServices::new`] gives each test its own PostgreSQL schema and its own RabbitMQ name
//! prefix, so tests run in parallel on one broker and one database. When a service is not
//! reachable the test fails loudly; it never skips.

pub mod fakes;

use sqlx::Connection;
use std::path::PathBuf;
use std::time::Duration;
use wangban::settings::Settings;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `wangban` binary, built on demand (integration tests of this package do not get it).
pub fn wangban_binary() -> PathBuf {
    built(false, &["wangban"]).join("wangban")
}

/// The broker tests use (`WANGBAN_TEST_AMQP_URL`, default the local guest account).
pub fn amqp_url() -> String {
    std::env::var("WANGBAN_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The database tests use (`WANGBAN_TEST_DATABASE_URL`, default the local `test` database).
pub fn database_url() -> String {
    std::env::var("WANGBAN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The S3-compatible server of the materials tests: `WANGBAN_TEST_S3_ENDPOINT`, `…_REGION`,
/// `…_BUCKET`, `…_ACCESS_KEY_ID`, `…_SECRET_ACCESS_KEY`, or the file `scripts/s3-server.sh`
/// writes (`/tmp/wangban-test-s3/env`). Panics naming the way to start one when there is none.
pub fn s3_config() -> wangban_materials::S3Config {
    let file = std::fs::read_to_string("/tmp/wangban-test-s3/env").unwrap_or_default();
    let get = |name: &str| {
        std::env::var(name).ok().or_else(|| {
            file.lines()
                .find_map(|l| l.strip_prefix(&format!("{name}=")).map(str::to_owned))
        })
        .unwrap_or_else(|| {
            panic!("{name} is not set and no S3 server was started: run `bash scripts/s3-server.sh` (scripts/test.sh does)")
        })
    };
    wangban_materials::S3Config {
        endpoint: Some(get("WANGBAN_TEST_S3_ENDPOINT")),
        bucket: get("WANGBAN_TEST_S3_BUCKET"),
        region: get("WANGBAN_TEST_S3_REGION"),
        access_key_id: get("WANGBAN_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: get("WANGBAN_TEST_S3_SECRET_ACCESS_KEY"),
        path_style: true,
    }
}

/// [`s3_config`] pointed at a port where nothing listens: a store that does not answer.
pub fn s3_config_down() -> wangban_materials::S3Config {
    let mut down = s3_config();
    down.endpoint = Some(format!("http://127.0.0.1:{}", free_port()));
    down
}

/// A test's own slice of the real services.
pub struct RealServices {
    pub settings: Settings,
    pub schema: String,
}

impl RealServices {
    /// A fresh schema and queue prefix named after `test`.
    pub async fn new(test: &str) -> RealServices {
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..10];
        let schema = format!("t_{}_{tag}", test.replace('-', "_"));
        sqlx::any::install_default_drivers();
        let mut admin = sqlx::AnyConnection::connect(&database_url()).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is not reachable at {} ({e}); run the tests with `bash scripts/test.sh`", database_url())
        });
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut admin)
            .await
            .expect("create the test schema");
        let _ = admin.close().await;
        let sep = if database_url().contains('?') {
            '&'
        } else {
            '?'
        };
        let mut settings = Settings::from_env("unused").expect("settings");
        settings.database_url =
            format!("{}{sep}options=-c%20search_path%3D{schema}", database_url());
        settings.amqp_url = Some(amqp_url());
        settings.queue_prefix = format!("test-{test}-{tag}.");
        settings.sim_delay = Duration::from_millis(5);
        settings.runtime.tick = Duration::from_millis(200);
        settings.fees.payment_window = Duration::from_secs(4);
        settings.fees.reminder_after = Duration::from_secs(2);
        RealServices { settings, schema }
    }

    /// Drops the schema and the test's queues and exchanges.
    pub async fn cleanup(&self, pipeline: &wangban::pipeline::Pipeline) {
        let _ = pipeline.runtime.bus.teardown(&pipeline.topology).await;
        pipeline.runtime.store.close().await;
        if let Ok(mut admin) = sqlx::AnyConnection::connect(&database_url()).await {
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA {} CASCADE",
                self.schema
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

/// `wangban serve` with every worker, running in this process on a test's services, and a
/// client pipeline to submit with and read the store through.
pub struct Served {
    pub env: RealServices,
    pub client: wangban::pipeline::Pipeline,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    stop: tokio::sync::watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Serves `env`'s settings on a free port and waits until `/readyz` says ready.
    pub async fn start(mut env: RealServices) -> Served {
        let port = free_port();
        env.settings.http_addr = format!("127.0.0.1:{port}");
        let (stop, rx) = tokio::sync::watch::channel(false);
        let settings = env.settings.clone();
        let server = tokio::spawn(async move {
            let workers = wangban::pipeline::WORKERS;
            if let Err(e) = wangban::serve::run(&settings, &workers, rx).await {
                panic!("wangban serve failed: {e:#}");
            }
        });
        let base = format!("http://127.0.0.1:{port}");
        eventually(Duration::from_secs(30), "/readyz to say ready", || async {
            http("GET", &format!("{base}/readyz"), None, None).await.0 == 200
        })
        .await;
        let client = wangban::pipeline::Pipeline::connect(&env.settings)
            .await
            .expect("the client pipeline connects");
        Served {
            env,
            client,
            base,
            stop,
            server,
        }
    }

    /// Stops the server and drops the test's schema, queues and exchanges.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.server.await;
        self.env.cleanup(&self.client).await;
    }
}

/// Polls `check` every 50 ms until it returns true, panicking with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the store holds exactly `n` effects of `purpose`. An effect follows the event that
/// asked for it (an SMS follows the state change it announces), so a test that has seen the state
/// waits for the effect too instead of counting at once.
pub async fn wait_effects(store: &wangban_store::Store, purpose: &str, n: i64) {
    let what = format!("{n} `{purpose}` effect(s)");
    eventually(Duration::from_secs(60), &what, || async {
        store
            .effect_counts(purpose)
            .await
            .is_ok_and(|seen| seen == n)
    })
    .await;
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind :0")
        .local_addr()
        .expect("addr")
        .port()
}

/// A minimal HTTP/1.1 client for the tests (GET/POST, optional bearer token): `(status, body)`;
/// status 0 when nothing listens.
pub async fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let Ok(mut stream) = tokio::net::TcpStream::connect(host).await else {
        return (0, String::new()); // not listening (yet)
    };
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    stream
        .write_all(req.as_bytes())
        .await
        .expect("send request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read response");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Worker processes (`wangban serve`, the release build) for fault injection and replicas.
pub struct WorkerProcesses;

impl WorkerProcesses {
    /// Starts `replicas` processes of every worker with `settings`' services and `extra` env;
    /// ten or fifteen processes share one PostgreSQL (max_connections 100): 4 connections each.
    pub fn start(
        settings: &Settings,
        replicas: usize,
        extra: &[(&str, &str)],
    ) -> wangban::processes::WorkerProcesses {
        let mut settings = settings.clone();
        settings.db_pool_size = 4;
        settings.runtime.concurrency = settings.runtime.concurrency.min(4);
        wangban::processes::WorkerProcesses::start(
            &wangban_binary_path(),
            &settings,
            replicas,
            extra,
        )
        .expect("wangban serve processes start")
    }
}

/// The binary worker processes run: the release build (fault runs and replicas measure a
/// pipeline, not a debug build), built once per test process.
pub fn wangban_binary_path() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built(true, &["wangban"]).join("wangban"))
        .clone()
}

/// `wangban-bench`, release build, with the `wangban` its worker processes run beside it.
pub fn wangban_bench_binary_path() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| built(true, &["wangban", "wangban-bench"]).join("wangban-bench"))
        .clone()
}

/// Builds `bins` (the release build when `release`) and returns the directory they are in.
fn built(release: bool, bins: &[&str]) -> PathBuf {
    let root = workspace_root();
    let mut cargo = std::process::Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet"]);
    if release {
        cargo.arg("--release");
    }
    for bin in bins {
        cargo.args(["--bin", bin]);
    }
    let status = cargo.current_dir(&root).status().expect("cargo build runs");
    assert!(status.success(), "building {bins:?} failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join(if release { "release" } else { "debug" })
}

/// Waits until the pipeline is quiet — outbox relayed and every worker queue empty, twice in a
/// row a second apart — so that every committed event has been handled.
pub async fn quiesce(pipeline: &wangban::pipeline::Pipeline) {
    for _ in 0..2 {
        eventually(Duration::from_secs(120), "the pipeline to be quiet", || {
            pipeline.is_quiet()
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Where a browser test writes its screenshots: `docs/` with `WANGBAN_UPDATE_SCREENSHOTS=1`
/// (to refresh the documentation's), else `target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    if std::env::var_os("WANGBAN_UPDATE_SCREENSHOTS").is_some() {
        return workspace_root().join("docs");
    }
    let dir = workspace_root().join("target/screenshots");
    std::fs::create_dir_all(&dir).expect("create target/screenshots");
    dir
}

/// Runs `tests/browser/<script>` with `args` in Debian's headless Chromium and returns the one
/// JSON line it prints of what it saw; panics with its output when it failed.
pub fn browser_run(script: &str, args: &[&str]) -> serde_json::Value {
    let dir = workspace_root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "tests/browser/node_modules is missing: run `bash scripts/test.sh` (it runs `npm ci` there)"
    );
    let out = std::process::Command::new("node")
        .current_dir(&dir)
        .arg(script)
        .args(args)
        .output()
        .expect("node runs (install Debian's nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}"))
        .unwrap_or_else(|_| {
            panic!(
                "{script} printed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    assert!(
        seen.get("error").is_none(),
        "the browser run failed: {seen}"
    );
    seen
}

pub use wangban::images::{jpeg, jpeg_sized};

/// The paths under `prefix` that `crates/api/src/lib.rs` routes (the first string after each
/// `.route(`, on its line or the next), without the OpenAPI description's own.
pub fn served_routes(prefix: &str) -> Vec<String> {
    let routes = std::fs::read_to_string(workspace_root().join("crates/api/src/lib.rs"))
        .expect("crates/api/src/lib.rs");
    routes
        .split(".route(")
        .skip(1)
        .filter_map(|r| r.trim_start().strip_prefix('"')?.split('"').next())
        .filter(|p| p.starts_with(prefix) && !p.ends_with("openapi.json"))
        .map(str::to_owned)
        .collect()
}
