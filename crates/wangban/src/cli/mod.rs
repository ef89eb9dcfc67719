//! The commands of the `wangban` binary, one module each, and what they share: the services
//! arguments, the store an inspecting command reads, usage errors (exit 2), logs.

pub mod bench;
pub mod config;
pub mod demo;
pub mod dlq;
pub mod serve;
pub mod store;
pub mod submit;

use clap::Args;
use wangban::settings::Settings;

#[derive(Args, Clone)]
pub struct Services {
    /// RabbitMQ URL; without it the in-process bus is used.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// `postgres://…` or `sqlite://FILE`.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

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

/// A mistake in how a command was called or configured (exit 2, as for clap's usage errors).
#[derive(Debug)]
pub struct Usage(String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(message.into()))
}

pub const DEFAULT_DATABASE: &str = "sqlite://wangban.sqlite";

pub fn settings(services: &Services, default_database: &str) -> anyhow::Result<Settings> {
    let mut s = Settings::from_env(default_database).map_err(|e| usage(format!("{e:#}")))?;
    if let Some(url) = &services.amqp_url {
        s.amqp_url = Some(url.clone()).filter(|u| !u.is_empty());
    }
    if let Some(url) = &services.database_url {
        s.database_url = url.clone();
    }
    Ok(s)
}

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

pub fn init_logs(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true) // `message` and the fields at the top level, as shippers expect
        .with_current_span(true)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
