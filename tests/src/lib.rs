//! Helpers shared by the end-to-end tests in `tests/tests/`.
//!
//! [`RealServices::new`] gives each test its own PostgreSQL schema and its own RabbitMQ name
//! prefix, so tests run in parallel on one broker and one database. When a service is not
//! reachable the test fails loudly; it never skips.

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
    let root = workspace_root();
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--bin", "wangban"])
        .current_dir(&root)
        .status()
        .expect("cargo build --bin wangban runs");
    assert!(status.success(), "building the wangban binary failed");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    target.join("debug").join("wangban")
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
