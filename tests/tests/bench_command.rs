//! `wangban-bench` runs end to end and reports what it measured — on RabbitMQ and PostgreSQL
//! (worker processes plus the bare-lapin baseline) and embedded. Figures are not asserted here
//! (speed is the command's output, not a test's verdict); completeness and consistency are.

use serde_json::Value;
use std::process::Command;
use wangban_tests::{amqp_url, database_url, wangban_bench_binary_path};

fn bench(args: &[&str], real: bool) -> (String, Value) {
    let mut cmd = Command::new(wangban_bench_binary_path());
    cmd.args(args)
        .env("RUST_LOG", "error")
        .env("WANGBAN_DB_POOL_SIZE", "4");
    if real {
        cmd.env("AMQP_URL", amqp_url())
            .env("DATABASE_URL", database_url());
    } else {
        cmd.env_remove("AMQP_URL").env_remove("DATABASE_URL");
    }
    let out = cmd.output().expect("wangban-bench runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: Value =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("the last line is JSON");
    (stdout, last)
}

fn check_common(last: &Value, cases: u64) {
    assert_eq!(last["cases"], cases);
    assert_eq!(
        last["finished"], cases,
        "every case must reach a final state"
    );
    for key in [
        "cases_per_s",
        "hops_per_case",
        "baseline_hops_per_s",
        "ratio",
        "p99_hop_ms",
        "max_rss_mib",
    ] {
        let v = last[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing in {last}"));
        assert!(v > 0.0, "{key} = {v}");
    }
    // Every case is handled by intake; accepted ones by every worker: > 5 hops on average.
    assert!(last["hops_per_case"].as_f64().unwrap() > 5.0, "{last}");
    let ratio = last["ratio"].as_f64().unwrap();
    let expected = last["wangban_hops_per_s"].as_f64().unwrap()
        / last["baseline_hops_per_s"].as_f64().unwrap();
    assert!((ratio - expected).abs() < 0.01, "{last}");
}

#[test]
fn bench_on_rabbitmq_and_postgresql_reports_both_sides() {
    let (table, last) = bench(&["--cases", "100"], true);
    check_common(&last, 100);
    for worker in ["intake", "review", "notify", "production", "courier"] {
        assert!(
            table.lines().any(|l| l.trim_start().starts_with(worker)),
            "no row for {worker}:\n{table}"
        );
    }
    // PostgreSQL's deadlocks during the run are reported (a count: other tests share the database).
    assert!(
        last["db_deadlocks"].as_i64().is_some_and(|n| n >= 0),
        "{last}"
    );
    // Worker processes were measured: CPU of the workers and the database was seen.
    assert!(last["cpu_s"]["workers"].as_f64().unwrap() > 0.0, "{last}");
    assert!(last["cpu_s"]["database"].as_f64().unwrap() > 0.0, "{last}");
}

#[test]
fn bench_embedded_runs_the_same_load_in_process() {
    let (_, last) = bench(&["--cases", "100", "--embedded"], false);
    check_common(&last, 100);
    assert!(last["mode"].as_str().unwrap().starts_with("embedded"));
    assert!(last["db_deadlocks"].is_null(), "{last}");
}

#[test]
fn the_bench_is_not_in_the_shipped_binary_and_names_a_missing_wangban() {
    use wangban_tests::wangban_binary_path;
    let out = Command::new(wangban_binary_path())
        .arg("bench")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "`wangban bench` is a usage error"
    );
    let out = Command::new(wangban_bench_binary_path())
        .args(["--cases", "1", "--wangban", "/nonexistent/wangban"])
        .env("AMQP_URL", amqp_url())
        .env("DATABASE_URL", database_url())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no wangban binary at /nonexistent/wangban"),
        "{stderr}"
    );
}
