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

#[test]
fn the_demos_applicants_upload_real_files_and_intake_checks_them() {
    let dir = std::env::temp_dir().join(format!(
        "wangban-demo-files-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let materials = dir.join("materials");
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("demo.sqlite");
    let out = Command::new(wangban_binary())
        .args(["demo", "--cases", "23", "--seed", "8", "--json"])
        .env_remove("AMQP_URL")
        .env("DATABASE_URL", format!("sqlite://{}", db.display()))
        .env("WANGBAN_MATERIALS_DIR", &materials)
        .output()
        .expect("wangban demo runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Real JPEGs, each under its SHA-256.
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&materials)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(files.len() >= 6, "{files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let facts = wangban_domain::materials::inspect(&bytes);
        assert_eq!(facts.content_type, Some("image/jpeg"), "{}", f.display());
        assert_eq!(
            f.file_name().unwrap().to_str().unwrap(),
            wangban_domain::materials::sha256_hex(&bytes)
        );
    }
    // The nonconforming photo was declared 360 px wide; its file is 300: the file decided, and
    // the disagreement is on the case's timeline.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let details: Vec<String> = rt.block_on(async {
        sqlx::any::install_default_drivers();
        let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&format!(
            "sqlite://{}",
            db.display()
        ))
        .await
        .unwrap();
        sqlx::query_scalar("SELECT detail FROM audit WHERE kind = 'materials_checked'")
            .fetch_all(&mut c)
            .await
            .unwrap()
    });
    assert!(!details.is_empty(), "no materials_checked record");
    let d: Value = serde_json::from_str(&details[0]).unwrap();
    assert_eq!(
        d["discrepancies"][0],
        serde_json::json!({"material": "photo", "field": "width_px", "declared": 360, "found": 300}),
        "{d}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
