//! What the command-line programs (`wangban`, `wangban-bench`) share: the services arguments,
//! settings from them, usage errors (exit 2), logs.

use crate::settings::Settings;
use clap::Args;

#[derive(Args, Clone)]
pub struct Services {
    /// RabbitMQ URL; without it the in-process bus is used.
    #[arg(long, env = "AMQP_URL", hide_env_values = true)]
    pub amqp_url: Option<String>,
    /// `postgres://…` or `sqlite://FILE`.
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
