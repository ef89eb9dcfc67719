//! Configuration commands: `reviewer-token`, `check-reviewers`, `topology`.

use super::{DEFAULT_DATABASE, usage};
use std::path::PathBuf;
use std::process::ExitCode;
use wangban::settings::Settings;

/// `reviewer-token`.
pub fn reviewer_token() -> anyhow::Result<ExitCode> {
    // 244 random bits from the operating system's generator (two v4 UUIDs).
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let digest = wangban_review::desk_file::token_digest(&token);
    println!(
        "token:        {token}
token_sha256: {digest}"
    );
    Ok(ExitCode::SUCCESS)
}

/// `check-reviewers`.
pub fn check_reviewers(file: PathBuf) -> anyhow::Result<ExitCode> {
    match wangban::settings::load_desk(&file) {
        Ok(desk) => {
            println!(
                "{}: {} offices, {} reviewers, {} halls, {} hall staff",
                file.display(),
                desk.offices.len(),
                desk.reviewers.len(),
                desk.halls.len(),
                desk.hall_staff.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(1))
        }
    }
}

/// `topology`.
pub fn topology(output: Option<PathBuf>, passwords: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let s = Settings::from_env(DEFAULT_DATABASE)?;
    let topology = wangban::pipeline::offline_topology(&s);
    let hashes = match passwords {
        None => None,
        Some(dir) => {
            let mut hashes = std::collections::BTreeMap::new();
            for user in topology.broker_users() {
                let file = dir.join(&user);
                let text = std::fs::read_to_string(&file).map_err(|e| {
                    usage(format!("the password of {user}: {}: {e}", file.display()))
                })?;
                let password = text.trim_end_matches(['\n', '\r']);
                if password.is_empty() {
                    return Err(usage(format!(
                        "the password of {user}: {} is empty",
                        file.display()
                    )));
                }
                // A fresh salt per user, from the operating system's generator.
                let salt = uuid::Uuid::new_v4().as_bytes()[..4]
                    .try_into()
                    .expect("4 bytes");
                hashes.insert(user, wangban_bus::password_hash(password, salt));
            }
            Some(hashes)
        }
    };
    let definitions = topology.rabbitmq_definitions(hashes.as_ref());
    let text = serde_json::to_string_pretty(&definitions)? + "\n";
    match output {
        Some(path) => std::fs::write(&path, text)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}
