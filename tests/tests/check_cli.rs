//! `wangban check` as a user runs it: one JSON line per file, every failing code, named fields.

use serde_json::Value;
use std::process::Command;
use wangban_tests::{wangban_binary, workspace_root};

fn check(files: &[&str]) -> (Vec<Value>, i32) {
    let root = workspace_root();
    let out = Command::new(wangban_binary())
        .arg("check")
        .args(files.iter().map(|f| root.join(f)))
        .output()
        .expect("wangban runs");
    let lines = String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    (lines, out.status.code().unwrap_or(-1))
}

#[test]
fn one_line_per_file_with_decision_reasons_and_errors() {
    let (lines, code) = check(&[
        "examples/applications/accepted-passport-courier.json",
        "examples/applications/rejected-three-reasons.json",
        "examples/applications/invalid-missing-phone.json",
        "examples/applications/accepted-permit-pickup.json",
    ]);
    assert_eq!(code, 0);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["decision"], "accepted");
    assert_eq!(lines[0]["reasons"], serde_json::json!([]));
    assert!(
        lines[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("accepted-passport-courier.json")
    );
    assert_eq!(lines[1]["decision"], "rejected");
    assert_eq!(
        lines[1]["reasons"],
        serde_json::json!([
            "hukou_not_in_pilot_city",
            "document_expired",
            "outside_mainland"
        ])
    );
    assert_eq!(lines[2]["decision"], "invalid");
    let errors: Vec<&str> = lines[2]["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors.contains(&"applicant.phone: is required"),
        "{errors:?}"
    );
    assert!(
        errors.contains(&"document.kind: is not a known value"),
        "{errors:?}"
    );
    assert_eq!(lines[3]["decision"], "accepted");
}

#[test]
fn an_unreadable_file_is_named_and_fails_the_command() {
    let (lines, code) = check(&["examples/applications/no-such-file.json"]);
    assert_eq!(code, 2);
    assert_eq!(lines[0]["decision"], "invalid");
    assert!(
        lines[0]["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("cannot read file")
    );
}

#[test]
fn every_event_type_is_documented_with_an_example() {
    let doc =
        std::fs::read_to_string(workspace_root().join("docs/events.md")).expect("docs/events.md");
    for t in wangban_domain::events::EventType::all() {
        let name = t.type_name();
        assert!(
            doc.contains(&format!("`{name}`")),
            "docs/events.md does not document {name}"
        );
    }
}

#[test]
fn the_checked_in_rabbitmq_definitions_are_what_the_workers_declare() {
    let out = Command::new(wangban_binary())
        .arg("topology")
        .env_remove("WANGBAN_QUEUE_PREFIX")
        .output()
        .unwrap();
    assert!(out.status.success());
    let generated: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file =
        std::fs::read_to_string(workspace_root().join("deploy/rabbitmq/definitions.json")).unwrap();
    let committed: Value = serde_json::from_str(&file).unwrap();
    assert_eq!(
        generated, committed,
        "run `wangban topology --output deploy/rabbitmq/definitions.json`"
    );
    assert!(
        committed["queues"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["arguments"]["x-queue-type"] == "quorum")
    );
    assert_eq!(
        committed["users"],
        serde_json::json!([]),
        "no users: no reset"
    );
    // Rendering a deployment's definitions needs every user's password: a missing one is named.
    let dir = std::env::temp_dir().join(format!("wangban-pw-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for user in [
        "wangban-intake",
        "wangban-review",
        "wangban-notify",
        "wangban-production",
    ] {
        std::fs::write(dir.join(user), "s3cret\n").unwrap();
    }
    let out = Command::new(wangban_binary())
        .args(["topology", "--passwords"])
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the password of wangban-courier"),
        "{stderr}"
    );
    for user in ["wangban-courier", "wangban-ops", "wangban-portal"] {
        std::fs::write(dir.join(user), "s3cret\n").unwrap();
    }
    let out = Command::new(wangban_binary())
        .args(["topology", "--passwords"])
        .arg(&dir)
        .env_remove("WANGBAN_QUEUE_PREFIX")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("s3cret"), "a password in the definitions");
    let rendered: Value = serde_json::from_str(&text).unwrap();
    let hashes: Vec<&str> = rendered["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["password_hash"].as_str().unwrap())
        .collect();
    assert_eq!(hashes.len(), 7);
    assert!(hashes.iter().all(|h| h.len() == 48), "{hashes:?}");
    assert_ne!(hashes[0], hashes[1], "a fresh salt per user");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn reviewers_files_are_checked_and_tokens_made() {
    let example = workspace_root().join("deploy/review/reviewers.example.json");
    let out = Command::new(wangban_binary())
        .arg("check-reviewers")
        .arg(&example)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 offices, 5 reviewers"));

    let dir = std::env::temp_dir().join(format!("wangban-reviewers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("reviewers.json");
    let text = std::fs::read_to_string(&example).unwrap().replace(
        "\"offices\": [\n        \"shanghai\"",
        "\"offices\": [\n        \"guangzhou\"",
    );
    std::fs::write(&broken, text).unwrap();
    let out = Command::new(wangban_binary())
        .arg("check-reviewers")
        .arg(&broken)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reviewer `sh-001`: unknown office `guangzhou`"),
        "{err}"
    );

    let out = Command::new(wangban_binary())
        .arg("reviewer-token")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
            .unwrap()
            .to_owned()
    };
    let token = field("token:");
    assert_eq!(token.len(), 64);
    assert_eq!(
        field("token_sha256:"),
        wangban_review::desk_file::token_digest(&token)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Exit codes: 0 done, 1 the command found problems, 2 a usage or configuration mistake, 3 a
/// failure while running. An inspecting command never creates the store it was asked to read.
#[test]
fn inspecting_commands_need_an_existing_store_and_say_so() {
    let dir = std::env::temp_dir().join(format!("wangban-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        Command::new(wangban_binary())
            .current_dir(&dir)
            .args(args)
            .env_remove("DATABASE_URL")
            .env_remove("AMQP_URL")
            .output()
            .unwrap()
    };
    for args in [
        &["audit", "verify"][..],
        &["verify"],
        &["case", "show", "APP-1"],
        &["dlq", "list"],
        &["retention", "run", "--dry-run"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("no database: set DATABASE_URL"),
            "{args:?}: {stderr}"
        );
    }
    let missing = dir.join("missing.sqlite");
    let url = format!("sqlite://{}", missing.display());
    let out = run(&["audit", "verify", "--database-url", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such database file"));
    assert!(!missing.exists(), "an inspecting command created a store");
    assert!(
        !dir.join("wangban.sqlite").exists(),
        "an inspecting command created a store"
    );
    // A command that publishes needs a broker: a usage error, not a silent in-process bus.
    let out = run(&[
        "submit",
        "examples/applications/accepted-passport-courier.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--amqp-url"));
    // A store that cannot be reached is a failure while running.
    let out = run(&[
        "audit",
        "verify",
        "--database-url",
        "postgres://nobody@127.0.0.1:9/none",
    ]);
    assert_eq!(out.status.code(), Some(3));
    // On a store that exists: retention says what it would erase (nothing of cases closed now).
    let store = dir.join("kept.sqlite");
    let created = Command::new(wangban_binary())
        .args(["demo", "--cases", "5", "--json"])
        .env("DATABASE_URL", format!("sqlite://{}", store.display()))
        .env_remove("AMQP_URL")
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let url = format!("sqlite://{}", store.display());
    let out = run(&["retention", "run", "--dry-run", "--database-url", &url]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.starts_with("would erase the personal data of 0 cases closed before "),
        "{said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn help_never_prints_secrets_from_the_environment() {
    for command in ["serve", "submit", "demo", "dlq", "audit"] {
        let out = Command::new(wangban_binary())
            .args([command, "--help"])
            .env("AMQP_URL", "amqp://guest:s3cret-broker@127.0.0.1:5672/%2f")
            .env(
                "DATABASE_URL",
                "postgres://wangban:s3cret-db@127.0.0.1/test",
            )
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command} --help: {text}");
        assert!(
            !text.contains("s3cret"),
            "{command} --help shows a secret:\n{text}"
        );
    }
}

#[test]
fn a_short_operator_token_is_refused_at_start() {
    let out = Command::new(wangban_binary())
        .args(["serve", "--workers", "none", "--http-addr", "127.0.0.1:0"])
        .env("WANGBAN_OPERATOR_TOKEN", "CHANGE-ME")
        .env("DATABASE_URL", "sqlite::memory:")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("at least 16 characters"), "{err}");
    assert!(!err.contains("CHANGE-ME"), "the token was printed: {err}");
}
