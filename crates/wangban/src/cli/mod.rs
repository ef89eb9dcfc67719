//! The commands of the `wangban` binary, one module each, and what they share: the services
//! arguments, the store an inspecting command reads, usage errors (exit 2), logs.

pub mod config;
pub mod demo;
pub mod dlq;
pub mod serve;
pub mod store;
pub mod submit;

use clap::Args;
use wangban::settings::Settings;

pub use wangban::command::{Services, Usage, init_logs, settings, usage};

/// The services of a command that publishes (`submit`, `dlq replay`): a broker is required, the
/// in-process bus living only as long as the command.
#[derive(Args, Clone)]
pub struct Broker {
    /// RabbitMQ URL, required.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: String,
    /// `postgres://…` or `sqlite://FILE`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl Broker {
    pub fn services(&self) -> anyhow::Result<Services> {
        if self.amqp_url.trim().is_empty() {
            return Err(usage(
                "AMQP_URL is empty: this command publishes, and the in-process bus would live only as long as it",
            ));
        }
        Ok(Services {
            amqp_url: Some(self.amqp_url.clone()),
            database_url: self.database_url.clone(),
        })
    }
}

/// The store an inspecting command reads. There is no default: reading a store that does not
/// exist is a mistake, never an empty success.
#[derive(Args, Clone)]
pub struct Database {
    /// `postgres://…` or `sqlite://FILE` (an existing file: the demo prints its own).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

pub const DEFAULT_DATABASE: &str = "sqlite://wangban.sqlite";

/// The settings of an inspecting command and its store: the database must be named and, for
/// SQLite, exist.
pub async fn existing_store(db: &Database) -> anyhow::Result<(Settings, wangban_store::Store)> {
    let Some(url) = db.database_url.clone().filter(|u| !u.is_empty()) else {
        return Err(usage(
            "no database: set DATABASE_URL or pass --database-url (postgres://… or sqlite://FILE)",
        ));
    };
    if let Some(file) = url.strip_prefix("sqlite://") {
        let path = file.split('?').next().unwrap_or(file);
        if !std::path::Path::new(path).exists() {
            return Err(usage(format!("no such database file: {path}")));
        }
    }
    let mut s = Settings::from_env(&url).map_err(|e| usage(format!("{e:#}")))?;
    s.database_url = url;
    let store = wangban_store::Store::connect(&s.database_url, s.fingerprint_key.expose()).await?;
    Ok((s, store))
}
