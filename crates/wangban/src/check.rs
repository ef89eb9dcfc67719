//! `wangban check`: the intake rules without a store, one JSON line per file. With
//! `--materials DIR` the photo guide is applied to the files themselves (DIR holds each material
//! under its SHA-256, the local materials store's layout), not to what the application declares.

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

/// The decision line for one file's bytes; with `materials`, the application's materials are
/// the files there (see [`materials_in`]).
pub fn decision_line(
    file: &str,
    bytes: &[u8],
    rules: &Rules,
    materials: Option<&Path>,
) -> serde_json::Value {
    match Application::parse(bytes) {
        Err(malformed) => {
            json!({"file": file, "decision": "invalid", "reasons": [], "errors": malformed.0})
        }
        Ok(mut app) => {
            let mut errors: Vec<String> = Vec::new();
            let mut checked = None;
            if let Some(dir) = materials {
                let (found, discrepancies) =
                    wangban_domain::materials::reconcile(&app.materials, |sha| {
                        materials_in(dir, sha).unwrap_or_else(|e| {
                            errors.push(e);
                            None
                        })
                    });
                app.materials = found;
                checked = Some(json!({"discrepancies": discrepancies}));
            }
            let codes = eligibility::assess(&app, rules);
            let decision = if codes.is_empty() {
                "accepted"
            } else {
                "rejected"
            };
            let reasons: Vec<&str> = codes.iter().map(|c| c.as_str()).collect();
            let mut line =
                json!({"file": file, "decision": decision, "reasons": reasons, "errors": errors});
            if let Some(checked) = checked {
                line["materials"] = checked;
            }
            line
        }
    }
}

/// The facts of the material named `sha256` in `dir`: `None` when there is no such file; an
/// error naming it when it cannot be read or its bytes do not hash to its name (not that
/// material: counted as missing).
pub fn materials_in(
    dir: &Path,
    sha256: &str,
) -> Result<Option<wangban_domain::materials::FileFacts>, String> {
    // The local store's own rules: 64 hex digits name a file, its bytes must hash to the name.
    let Ok(name) = wangban_materials::checked_name(sha256) else {
        return Ok(None);
    };
    let bytes = match std::fs::read(dir.join(&name)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("material {name}: cannot read: {e}")),
    };
    let bytes = wangban_materials::verified(name, bytes).map_err(|e| e.to_string())?;
    Ok(bytes.map(|b| wangban_domain::materials::inspect(&b)))
}

/// Prints a line per file. Exits 0 when every file was read (whatever its decision), 2 when a
/// file could not be read (its line says so, as `invalid`).
pub fn run(
    files: &[PathBuf],
    pilot_cities: Option<&Path>,
    materials: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let rules = load_rules(pilot_cities)?;
    if let Some(dir) = materials {
        anyhow::ensure!(
            dir.is_dir(),
            "--materials {}: not a directory",
            dir.display()
        );
    }
    let mut unreadable = false;
    for path in files {
        let name = path.display().to_string();
        let line = match std::fs::read(path) {
            Ok(bytes) => decision_line(&name, &bytes, &rules, materials),
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
