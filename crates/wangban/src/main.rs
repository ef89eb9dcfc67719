//! `wangban`: one binary for every worker and every operator command.
//!
//! - `wangban check FILE...` — stateless eligibility check, one JSON line per file.
//!
//! Configuration comes from flags or the environment (see the README's configuration table).

mod check;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "wangban",
    version,
    about = "Back office for fully-online replacement and reissue of exit-entry documents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check application files against every eligibility rule (all but
    /// duplicate_active_application, which needs the store). Prints one JSON line per file.
    Check {
        /// Application JSON files (domain.md §3).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// A pilot-city list replacing the shipped one.
        #[arg(long, env = "WANGBAN_PILOT_CITIES")]
        pilot_cities: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            files,
            pilot_cities,
        } => check::run(&files, pilot_cities.as_deref()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wangban: {e:#}");
            ExitCode::from(2)
        }
    }
}
