//! `wangban demo` as a user first runs it: the embedded default (in-process bus, SQLite), with
//! its table, one case's timeline and the closing JSON line.

use serde_json::Value;
use std::process::Command;
use wangban_tests::wangban_binary;

#[test]
fn the_embedded_demo_ends_every_case_as_expected() {
    let out = Command::new(wangban_binary())
        .args(["demo", "--cases", "60", "--seed", "5", "--json"])
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("wangban demo runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: Value =
        serde_json::from_str(stdout.lines().last().unwrap()).expect("last line is JSON");
    assert_eq!(last["cases"], 60);
    assert_eq!(last["unexpected"], 0);
    let by_state = last["by_state"].as_object().unwrap();
    let total: u64 = by_state.values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(total, 60);
    for state in [
        "delivered",
        "collected",
        "rejected",
        "review_rejected",
        "payment_expired",
    ] {
        assert!(
            by_state.get(state).and_then(Value::as_u64).unwrap_or(0) > 0,
            "{state} missing: {by_state:?}"
        );
    }
    assert_eq!(
        stdout.lines().count(),
        1,
        "--json prints only its line: {stdout}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("final state"), "the tables go to stderr");
    // Progress, when stderr is not a terminal, is one line per update.
    assert!(stderr.contains("[demo] "), "{stderr}");
    assert!(
        !stderr.contains('\r'),
        "carriage returns in a log: {stderr}"
    );
    // Every scenario the demo drives is named, with its cases and how many went wrong.
    let scenarios = last["scenarios"].as_object().expect("scenarios");
    for name in [
        "courier_returned",
        "correction_lapsed",
        "late_production",
        "uncollected",
        "correction",
        "unpaid",
        "malformed",
        "permit_pickup",
    ] {
        assert!(
            scenarios[name]["cases"].as_u64().unwrap_or(0) > 0,
            "{name}: {scenarios:?}"
        );
        assert_eq!(scenarios[name]["unexpected"], 0, "{name}");
    }
    let driven: u64 = scenarios
        .values()
        .map(|v| v["cases"].as_u64().unwrap())
        .sum();
    assert_eq!(driven, 60);
}

#[test]
fn without_json_it_prints_its_tables_and_one_masked_timeline() {
    let out = Command::new(wangban_binary())
        .args(["demo", "--cases", "20", "--seed", "6"])
        .env_remove("AMQP_URL")
        .env_remove("DATABASE_URL")
        .output()
        .expect("wangban demo runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("final state")
            && stdout.contains("scenario")
            && stdout.contains("timeline (Beijing time)"),
        "{stdout}"
    );
    // The timeline masks the ID number: no 18-character number appears in the output.
    assert!(
        !stdout
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|w| w.len() == 18 && w[..17].bytes().all(|b| b.is_ascii_digit()))
    );
}
