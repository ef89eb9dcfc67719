//! `wangban check`: the intake rules without a store, one JSON line per file.

use anyhow::Context;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use wangban_domain::application::Application;
use wangban_domain::eligibility::{self, Rules};
use wangban_domain::pilot::PilotCities;

/// Loads the eligibility rules, with a pilot-city list from `pilot_cities` when given.
pub fn load_rules(pilot_cities: Option<&Path>) -> anyhow::Result<Rules> {
    let mut rules = Rules::default();
    if let Some(path) = pilot_cities {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pilot-city list {}", path.display()))?;
        rules.pilot_cities = PilotCities::from_json(&text).map_err(anyhow::Error::msg)?;
    }
    Ok(rules)
}

/// The decision line for one file's bytes.
pub fn decision_line(file: &str, bytes: &[u8], rules: &Rules) -> serde_json::Value {
    match Application::parse(bytes) {
        Err(malformed) => {
            json!({"file": file, "decision": "invalid", "reasons": [], "errors": malformed.0})
        }
        Ok(app) => {
            let codes = eligibility::assess(&app, rules);
            let decision = if codes.is_empty() {
                "accepted"
            } else {
                "rejected"
            };
            let reasons: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            json!({"file": file, "decision": decision, "reasons": reasons, "errors": []})
        }
    }
}

/// Prints a line per file. Exits 0 when every file was read (whatever its decision), 2 when a
/// file could not be read (its line says so, as `invalid`).
pub fn run(files: &[PathBuf], pilot_cities: Option<&Path>) -> anyhow::Result<ExitCode> {
    let rules = load_rules(pilot_cities)?;
    let mut unreadable = false;
    for path in files {
        let name = path.display().to_string();
        let line = match std::fs::read(path) {
            Ok(bytes) => decision_line(&name, &bytes, &rules),
            Err(e) => {
                unreadable = true;
                json!({"file": name, "decision": "invalid", "reasons": [], "errors": [format!("cannot read file: {e}")]})
            }
        };
        println!("{line}");
    }
    Ok(if unreadable {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}
