//! Configuration: one struct, from flags and environment. Every field is in the README's
//! configuration table. Secrets are wrapped so that `Debug` prints `***`.

use anyhow::Context;
use std::path::Path;
use std::time::Duration;
use wangban_domain::calendar::WorkingCalendar;
use wangban_domain::clock::Clock;
use wangban_domain::eligibility::Rules;
use wangban_domain::pilot::PilotCities;
use wangban_notify::FeeConfig;
use wangban_runtime::RuntimeConfig;

/// A secret value; never printed.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Everything a pipeline needs.
/// The applicants' uploads (`WANGBAN_MATERIALS_DIR`, or `WANGBAN_MATERIALS_S3_*`).
#[derive(Clone)]
pub struct MaterialsStore(pub std::sync::Arc<dyn wangban_materials::MaterialStore>);

impl std::fmt::Debug for MaterialsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.describe()) // never the keys
    }
}

impl MaterialsStore {
    /// The store the environment names, if any: a directory (`WANGBAN_MATERIALS_DIR`) or an
    /// S3-compatible bucket (`WANGBAN_MATERIALS_S3_BUCKET` with `…_ENDPOINT`, `…_REGION`,
    /// `…_ACCESS_KEY_ID`, `…_SECRET_ACCESS_KEY` or `…_SECRET_ACCESS_KEY_FILE`, `…_PATH_STYLE`).
    pub fn from_env() -> anyhow::Result<Option<MaterialsStore>> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let dir = var("WANGBAN_MATERIALS_DIR");
        let bucket = var("WANGBAN_MATERIALS_S3_BUCKET");
        let store: std::sync::Arc<dyn wangban_materials::MaterialStore> = match (dir, bucket) {
            (None, None) => return Ok(None),
            (Some(_), Some(_)) => {
                anyhow::bail!("set WANGBAN_MATERIALS_DIR or WANGBAN_MATERIALS_S3_BUCKET, not both")
            }
            (Some(dir), None) => std::sync::Arc::new(wangban_materials::LocalDir::new(dir)),
            (None, Some(bucket)) => {
                let endpoint = var("WANGBAN_MATERIALS_S3_ENDPOINT");
                let secret = match (
                    var("WANGBAN_MATERIALS_S3_SECRET_ACCESS_KEY"),
                    var("WANGBAN_MATERIALS_S3_SECRET_ACCESS_KEY_FILE"),
                ) {
                    (Some(s), None) => s,
                    (None, Some(file)) => std::fs::read_to_string(&file)
                        .with_context(|| {
                            format!("reading WANGBAN_MATERIALS_S3_SECRET_ACCESS_KEY_FILE {file}")
                        })?
                        .trim_end()
                        .to_owned(),
                    _ => anyhow::bail!(
                        "WANGBAN_MATERIALS_S3_BUCKET needs WANGBAN_MATERIALS_S3_SECRET_ACCESS_KEY or …_FILE (one of them)"
                    ),
                };
                let path_style = match var("WANGBAN_MATERIALS_S3_PATH_STYLE").as_deref() {
                    None => endpoint.is_some(),
                    Some("true") => true,
                    Some("false") => false,
                    Some(other) => anyhow::bail!(
                        "WANGBAN_MATERIALS_S3_PATH_STYLE must be true or false, not `{other}`"
                    ),
                };
                let config = wangban_materials::S3Config {
                    endpoint,
                    bucket,
                    region: var("WANGBAN_MATERIALS_S3_REGION")
                        .unwrap_or_else(|| "us-east-1".into()),
                    access_key_id: var("WANGBAN_MATERIALS_S3_ACCESS_KEY_ID").context(
                        "WANGBAN_MATERIALS_S3_BUCKET needs WANGBAN_MATERIALS_S3_ACCESS_KEY_ID",
                    )?,
                    secret_access_key: secret,
                    path_style,
                };
                std::sync::Arc::new(
                    wangban_materials::S3::new(&config).map_err(anyhow::Error::msg)?,
                )
            }
        };
        Ok(Some(MaterialsStore(store)))
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    /// `amqp://…` or `amqps://…`; `None` runs the in-process bus.
    pub amqp_url: Option<String>,
    /// A PEM file of CA certificates trusted for `amqps://` besides the system's roots.
    pub amqp_ca_file: Option<std::path::PathBuf>,
    /// A file holding the broker password (`AMQP_PASSWORD_FILE`: a mounted secret), which takes
    /// the place of any password in `amqp_url` when connecting.
    pub amqp_password_file: Option<std::path::PathBuf>,
    /// `postgres://…` or `sqlite://FILE`.
    pub database_url: String,
    /// Prefix of every exchange and queue name (tests and tenants on one broker).
    pub queue_prefix: String,
    /// Key of the ID-number fingerprints (duplicate detection without storing numbers in an index).
    pub fingerprint_key: Secret,
    pub rules: Rules,
    pub calendar: WorkingCalendar,
    pub fees: FeeConfig,
    pub production_working_days: u32,
    /// How long the simulated parties take to answer.
    pub sim_delay: Duration,
    pub runtime: RuntimeConfig,
    /// Deliveries of one message before the broker dead-letters it.
    pub delivery_limit: u32,
    /// Where `serve` listens for HTTP (health, metrics, operations).
    pub http_addr: String,
    /// Where `serve` writes the address it bound (useful with port 0: supervisors, benchmarks).
    pub http_addr_file: Option<std::path::PathBuf>,
    /// Bearer token of the operations API and dashboard; `None` keeps them closed.
    pub operator_token: Option<Secret>,
    /// How often `serve` samples cases per state for the dashboard's chart.
    pub sample_every: Duration,
    /// Working days a case may wait for its review decision.
    pub review_working_days: u32,
    /// Our own review desk, from the reviewers file (`WANGBAN_REVIEWERS_FILE`); `None`: the
    /// simulated desk decides.
    pub desk: Option<wangban_review::desk_file::DeskFile>,
    /// Where `desk` was read from; the review worker reloads it when it changes.
    pub reviewers_file: Option<std::path::PathBuf>,
    /// Review rounds a case may have (`WANGBAN_REVIEW_MAX_ROUNDS`).
    pub review_max_rounds: i64,
    /// A document ready at the hall's counter this long is listed as uncollected
    /// (`WANGBAN_HALL_UNCOLLECTED_DAYS`).
    pub hall_uncollected_after: Duration,
    /// Time to resubmit after a correction request (`WANGBAN_RESUBMIT_WITHIN_SECS`).
    pub resubmit_within: Duration,
    /// A review task held this long goes back to the queue (`WANGBAN_REVIEW_HOLD_SECS`).
    pub review_hold: Duration,
    /// The one clock of the process (the system's; tests and the demo control it).
    pub clock: Clock,
    /// Personal data is kept this long after a case closed (`WANGBAN_RETENTION_DAYS`, 180).
    pub retention: Duration,
    /// The HTTP server's limits (`WANGBAN_HTTP_MAX_CONNECTIONS`, `…_HEADER_TIMEOUT_SECS`,
    /// `…_REQUEST_TIMEOUT_SECS`, `…_AUTH_FAILURES_PER_MINUTE`).
    pub http_limits: wangban_api::HttpLimits,
    /// Where spans are exported (OTLP over HTTP/JSON); `None`: not traced.
    pub otlp: Option<crate::otlp::OtlpConfig>,
    /// Declare only the queues of the workers this process runs (`WANGBAN_DECLARE=own`), for
    /// broker users limited to their own queues; the definitions file declares the rest.
    pub declare_own: bool,
    /// Whose outbox rows this process's relay publishes (`WANGBAN_RELAY`: `all`, the default,
    /// or a comma-separated list of workers and `http`): with one broker user per worker, each
    /// process relays only what its user may publish (docs/security.md). `None`: all.
    pub relay: Option<Vec<&'static str>>,
    /// Where the applicants' uploads are; with one, intake checks the files themselves
    /// (`None`: the declarations are taken as they are).
    pub materials: Option<MaterialsStore>,
    /// Refuse applications carrying fields the contract does not define
    /// (`WANGBAN_UNKNOWN_FIELDS=refuse`); by default they are ignored.
    pub refuse_unknown_fields: bool,
    /// How long the simulated parties remember idempotency keys (`WANGBAN_SIM_LEDGER_SECS`;
    /// unset: for the life of the process).
    pub sim_ledger_retention: Option<Duration>,
    /// The parties reached over HTTP (the others are simulated).
    pub parties: crate::parties::PartySettings,
    /// Faults of the simulated parties (fault-injection runs).
    pub sim_faults: wangban_providers::simulated::SimFaults,
    /// Most PostgreSQL connections this process opens.
    pub db_pool_size: u32,
    /// How long `serve` may take to stop after SIGTERM before it abandons in-flight work (which
    /// the broker then redelivers).
    pub shutdown_deadline: Duration,
    /// How long the portal side (`wangban submit`, the demo's driver) retries a lost or refused
    /// broker connection before it gives up (`WANGBAN_PORTAL_RETRY_SECS`).
    pub portal_retry: Duration,
}

/// The shortest operator token taken: the token opens every case's timeline.
pub const MIN_OPERATOR_TOKEN_CHARS: usize = 16;

/// `WANGBAN_OPERATOR_TOKEN`, if set: refused when shorter than [`MIN_OPERATOR_TOKEN_CHARS`].
fn operator_token() -> anyhow::Result<Option<Secret>> {
    let Some(token) = std::env::var("WANGBAN_OPERATOR_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
    else {
        return Ok(None);
    };
    anyhow::ensure!(
        token.chars().count() >= MIN_OPERATOR_TOKEN_CHARS,
        "WANGBAN_OPERATOR_TOKEN must be at least {MIN_OPERATOR_TOKEN_CHARS} characters (make one with `openssl rand -hex 24`)"
    );
    Ok(Some(Secret::new(token)))
}

fn env_u64(name: &str) -> anyhow::Result<Option<u64>> {
    match std::env::var(name) {
        Ok(v) => {
            Ok(Some(v.parse().with_context(|| {
                format!("{name} must be a whole number")
            })?))
        }
        Err(_) => Ok(None),
    }
}

impl Settings {
    /// Settings from the environment (flags override `amqp_url` and `database_url` after this).
    pub fn from_env(default_database_url: &str) -> anyhow::Result<Settings> {
        let mut rules = Rules::default();
        if let Ok(path) = std::env::var("WANGBAN_PILOT_CITIES") {
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            rules.pilot_cities = PilotCities::from_json(&text).map_err(anyhow::Error::msg)?;
        }
        let calendar = match std::env::var("WANGBAN_CALENDAR") {
            Ok(path) => load_calendar(Path::new(&path))?,
            Err(_) => WorkingCalendar::default(),
        };
        let mut fees = FeeConfig::default();
        if let Some(s) = env_u64("WANGBAN_PAYMENT_WINDOW_SECS")? {
            fees.payment_window = Duration::from_secs(s);
        }
        if let Some(s) = env_u64("WANGBAN_PAYMENT_REMINDER_SECS")? {
            fees.reminder_after = Duration::from_secs(s);
        }
        let reviewers_file: Option<std::path::PathBuf> = std::env::var_os("WANGBAN_REVIEWERS_FILE")
            .filter(|s| !s.is_empty())
            .map(Into::into);
        let mut runtime = RuntimeConfig::default();
        if let Some(ms) = env_u64("WANGBAN_TICK_MS")? {
            runtime.tick = Duration::from_millis(ms.max(10));
        }
        if let Some(p) = env_u64("WANGBAN_PREFETCH")? {
            runtime.prefetch = p.clamp(1, 1000) as u16;
        }
        if let Some(c) = env_u64("WANGBAN_CONCURRENCY")? {
            runtime.concurrency = c.clamp(1, 256) as usize;
        }
        if let Some(b) = env_u64("WANGBAN_BATCH")? {
            runtime.batch = b.clamp(1, 256) as usize;
        }
        if let Some(c) = env_u64("WANGBAN_EFFECT_CONCURRENCY")? {
            runtime.effect_concurrency = c.clamp(1, 4096) as usize;
        }
        if let Some(n) = env_u64("WANGBAN_EFFECT_ATTEMPTS")? {
            runtime.effect_attempts = n.clamp(1, 1000) as i64;
        }
        if let Some(ms) = env_u64("WANGBAN_EFFECT_LEASE_MS")? {
            runtime.effect_lease = Duration::from_millis(ms.max(100));
        }
        if let Some(ms) = env_u64("WANGBAN_EFFECT_RETRY_MS")? {
            runtime.effect_retry_min = Duration::from_millis(ms.max(1));
        }
        if let Some(ms) = env_u64("WANGBAN_EFFECT_MAX_RETRY_MS")? {
            runtime.effect_retry_max = Duration::from_millis(ms.max(1));
        }
        let mut http_limits = wangban_api::HttpLimits::default();
        if let Some(n) = env_u64("WANGBAN_HTTP_MAX_CONNECTIONS")? {
            http_limits.max_connections = n.clamp(1, 1_000_000) as usize;
        }
        if let Some(s) = env_u64("WANGBAN_HTTP_HEADER_TIMEOUT_SECS")? {
            http_limits.header_read_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(s) = env_u64("WANGBAN_HTTP_REQUEST_TIMEOUT_SECS")? {
            http_limits.request_timeout = Duration::from_secs(s.max(1));
        }
        if let Some(n) = env_u64("WANGBAN_HTTP_AUTH_FAILURES_PER_MINUTE")? {
            http_limits.auth_failures_per_minute = n.clamp(1, u64::from(u32::MAX)) as u32;
        }
        Ok(Settings {
            retention: Duration::from_secs(
                env_u64("WANGBAN_RETENTION_DAYS")?.unwrap_or(180).max(1) * 86_400,
            ),
            http_limits,
            otlp: crate::otlp::OtlpConfig::from_env()?,
            amqp_url: std::env::var("AMQP_URL").ok().filter(|s| !s.is_empty()),
            amqp_ca_file: std::env::var_os("WANGBAN_AMQP_CA_FILE")
                .filter(|s| !s.is_empty())
                .map(Into::into),
            amqp_password_file: std::env::var_os("AMQP_PASSWORD_FILE")
                .filter(|s| !s.is_empty())
                .map(Into::into),
            database_url: std::env::var("DATABASE_URL")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| default_database_url.to_owned()),
            queue_prefix: std::env::var("WANGBAN_QUEUE_PREFIX").unwrap_or_default(),
            fingerprint_key: Secret::new(
                std::env::var("WANGBAN_FINGERPRINT_KEY")
                    .unwrap_or_else(|_| "wangban-development-key".into()),
            ),
            rules,
            calendar,
            fees,
            production_working_days: 3,
            sim_delay: Duration::from_millis(env_u64("WANGBAN_SIM_DELAY_MS")?.unwrap_or(20)),
            runtime,
            delivery_limit: env_u64("WANGBAN_DELIVERY_LIMIT")?.unwrap_or(20) as u32,
            http_addr: std::env::var("WANGBAN_HTTP_ADDR")
                .unwrap_or_else(|_| "127.0.0.1:8080".into()),
            http_addr_file: std::env::var_os("WANGBAN_HTTP_ADDR_FILE")
                .filter(|s| !s.is_empty())
                .map(Into::into),
            operator_token: operator_token()?,
            sample_every: Duration::from_secs(env_u64("WANGBAN_SAMPLE_SECS")?.unwrap_or(60).max(1)),
            review_working_days: env_u64("WANGBAN_REVIEW_WORKING_DAYS")?.unwrap_or(2) as u32,
            desk: match &reviewers_file {
                Some(path) => Some(load_desk(path)?),
                None => None,
            },
            reviewers_file,
            review_max_rounds: env_u64("WANGBAN_REVIEW_MAX_ROUNDS")?.unwrap_or(3).max(1) as i64,
            hall_uncollected_after: Duration::from_secs(
                env_u64("WANGBAN_HALL_UNCOLLECTED_DAYS")?.unwrap_or(30) * 86_400,
            ),
            resubmit_within: Duration::from_secs(
                env_u64("WANGBAN_RESUBMIT_WITHIN_SECS")?.unwrap_or(7 * 86_400),
            ),
            review_hold: Duration::from_secs(
                env_u64("WANGBAN_REVIEW_HOLD_SECS")?.unwrap_or(4 * 3600),
            ),
            clock: Clock::system(),
            declare_own: match std::env::var("WANGBAN_DECLARE").as_deref() {
                Ok("own") => true,
                Ok("all") | Err(_) => false,
                Ok(other) => anyhow::bail!("WANGBAN_DECLARE must be `all` or `own`, not `{other}`"),
            },
            relay: relay_producers(std::env::var("WANGBAN_RELAY").ok().as_deref())?,
            materials: MaterialsStore::from_env()?,
            refuse_unknown_fields: match std::env::var("WANGBAN_UNKNOWN_FIELDS").as_deref() {
                Ok("refuse") => true,
                Ok("ignore") | Err(_) => false,
                Ok(other) => {
                    anyhow::bail!(
                        "WANGBAN_UNKNOWN_FIELDS must be `ignore` or `refuse`, not `{other}`"
                    )
                }
            },
            sim_ledger_retention: env_u64("WANGBAN_SIM_LEDGER_SECS")?.map(Duration::from_secs),
            parties: crate::parties::PartySettings::from_env()?,
            sim_faults: wangban_providers::simulated::SimFaults {
                outage_file: std::env::var_os("WANGBAN_SIM_OUTAGE_FILE").map(Into::into),
                duplicate_answers: std::env::var("WANGBAN_SIM_DUPLICATES").is_ok_and(|v| v == "1"),
                slow: match std::env::var("WANGBAN_SIM_SLOW") {
                    Ok(v) if !v.is_empty() => Some(
                        wangban_providers::simulated::SlowParties::parse(&v)
                            .map_err(|e| anyhow::anyhow!("WANGBAN_SIM_SLOW: {e}"))?,
                    ),
                    _ => None,
                },
            },
            shutdown_deadline: Duration::from_secs(env_u64("WANGBAN_SHUTDOWN_SECS")?.unwrap_or(30)),
            portal_retry: Duration::from_secs(env_u64("WANGBAN_PORTAL_RETRY_SECS")?.unwrap_or(120)),
            db_pool_size: env_u64("WANGBAN_DB_POOL_SIZE")?.unwrap_or(8).clamp(1, 100) as u32,
        })
    }
}

impl Settings {
    /// The review clock and the corrections loop's limits.
    pub fn review_rules(&self) -> wangban_review::ReviewRules {
        wangban_review::ReviewRules {
            calendar: self.calendar.clone(),
            working_days: self.review_working_days,
            max_rounds: self.review_max_rounds,
            resubmit_within: self.resubmit_within,
            hold: self.review_hold,
        }
    }

    /// The broker URL to connect with: `amqp_url`, its password taken from
    /// `AMQP_PASSWORD_FILE` (read now) when that is set.
    pub fn amqp_connect_url(&self) -> anyhow::Result<Option<String>> {
        let (Some(url), Some(file)) = (&self.amqp_url, &self.amqp_password_file) else {
            return Ok(self.amqp_url.clone());
        };
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading AMQP_PASSWORD_FILE {}", file.display()))?;
        let password = text.trim_end_matches(['\n', '\r']);
        if password.is_empty() {
            anyhow::bail!("AMQP_PASSWORD_FILE {} is empty", file.display());
        }
        Ok(Some(with_password(url, password)?))
    }

    /// The PEM of `WANGBAN_AMQP_CA_FILE`, read now, if one is set.
    pub fn amqp_ca_pem(&self) -> anyhow::Result<Option<String>> {
        self.amqp_ca_file
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading WANGBAN_AMQP_CA_FILE {}", path.display()))
            })
            .transpose()
    }
}

/// `url` (`amqp[s]://user[:password]@host…`) with `password`, percent-encoded, as its password.
fn with_password(url: &str, password: &str) -> anyhow::Result<String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        anyhow::bail!("AMQP_URL is not a URL (no scheme)");
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        anyhow::bail!("AMQP_URL names no user for the password of AMQP_PASSWORD_FILE");
    };
    let user = rest[..at].split(':').next().unwrap_or_default();
    let encoded: String = password
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    Ok(format!("{scheme}://{user}:{encoded}{}", &rest[at..]))
}

/// Reads and checks the reviewers file.
pub fn load_desk(path: &Path) -> anyhow::Result<wangban_review::desk_file::DeskFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading reviewers file {}", path.display()))?;
    wangban_review::desk_file::DeskFile::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn load_calendar(path: &Path) -> anyhow::Result<WorkingCalendar> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading calendar {}", path.display()))?;
    Ok(WorkingCalendar::from_json(&text)?)
}

/// The producers named by `WANGBAN_RELAY` (see [`Settings::relay`]).
pub fn relay_producers(value: Option<&str>) -> anyhow::Result<Option<Vec<&'static str>>> {
    let Some(value) = value
        .map(str::trim)
        .filter(|v| !v.is_empty() && *v != "all")
    else {
        return Ok(None);
    };
    let known = crate::pipeline::WORKERS
        .iter()
        .copied()
        .chain([wangban_store::HTTP_PRODUCER]);
    let mut producers = Vec::new();
    for name in value.split(',').map(str::trim) {
        let Some(p) = known.clone().find(|k| *k == name) else {
            anyhow::bail!(
                "WANGBAN_RELAY names `{name}`: it takes `all` or workers and `http`, comma-separated"
            );
        };
        producers.push(p);
    }
    Ok(Some(producers))
}

#[cfg(test)]
mod tests {
    use super::{relay_producers, with_password};

    #[test]
    fn relay_names_workers_and_http() {
        assert_eq!(relay_producers(None).unwrap(), None);
        assert_eq!(relay_producers(Some("all")).unwrap(), None);
        assert_eq!(
            relay_producers(Some("notify, http")).unwrap(),
            Some(vec!["notify", "http"])
        );
        let e = relay_producers(Some("notify,payments")).unwrap_err();
        assert!(e.to_string().contains("`payments`"), "{e}");
    }

    #[test]
    fn a_password_file_takes_the_place_of_the_urls_password() {
        for (url, want) in [
            (
                "amqp://wangban-intake@rabbitmq:5672/%2f",
                "amqp://wangban-intake:p%40ss%2Fw%3Ard@rabbitmq:5672/%2f",
            ),
            (
                "amqps://u:old@h/%2f?heartbeat=10",
                "amqps://u:p%40ss%2Fw%3Ard@h/%2f?heartbeat=10",
            ),
            ("amqp://u@h", "amqp://u:p%40ss%2Fw%3Ard@h"),
        ] {
            assert_eq!(with_password(url, "p@ss/w:rd").unwrap(), want);
        }
        let e = with_password("amqp://rabbitmq:5672/%2f", "x").unwrap_err();
        assert!(e.to_string().contains("names no user"), "{e}");
    }
}
