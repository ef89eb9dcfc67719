//! The store: PostgreSQL in production, SQLite as the embedded default, one code path for both
//! through sqlx's `Any` driver with runtime-checked queries (`$1` placeholders work on both).
//!
//! What lives here, and the invariants the tables keep:
//! - `cases`: one row per `application_id`; at most one *open* case per person (a keyed digest of
//!   the ID number, never the number) and document kind.
//! - `audit`: append-only and hash-chained per case; the case row holds the chain's head, so a
//!   deleted tail is detected too ([`Store::verify_audit`]).
//! - `outbox` / `inbox`: a handler's state change, its outgoing events and the mark that it saw
//!   the incoming event commit in one transaction ([`CaseTx`]); the relay publishes the outbox
//!   with confirms ([`Store::begin_relay`]).
//! - `effects`: one row per effect on the outside world — `(case, purpose)` happens once.
//! - `effect_commands`: the effects workers asked for, until the parties' executors have carried
//!   them out (`effects.rs`).
//! - `dead_letters`: every refused message, with its reason, kept until an operator replays it.
//! - `review_*`: the review desk — offices, reviewers, one task per review round of a case
//!   (`desk.rs` gives the lock order).

mod audit;
mod callbacks;
mod desk;
mod effects;
mod hall;
mod materials;
mod operations;
mod pending;
mod read;
mod retention;
mod scheduled;
mod tx;

pub use audit::{AuditProblem, AuditRecord, AuditReport, GENESIS, Snapshot};
pub use callbacks::UnmatchedPayment;
pub use desk::{DeskMember, Office, Reviewer, Task, office_for};
pub use effects::{EffectCommand, EffectCounts};
pub use hall::{Hall, HallDocument, HallMember, HallStaff, hall_for, serving};
pub use materials::{CaseMaterial, MaterialProblem, declared as declared_materials};
pub use operations::{ReplayClaim, Retry, StateSample};
pub use read::{CaseView, DeadLetter};
pub use retention::{Erased, erase_personal_data};
pub use scheduled::ScheduledEvent;
pub use tx::{CaseRecord, CaseTx, NewCase};

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Executor};
use std::time::Duration;
use wangban_domain::clock::Clock;

/// Which database is behind the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A store error, classified once: transient errors are worth retrying, permanent ones are not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is shutting down.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A concurrent writer won (unique key, version check, serialization): retry.
    #[error("concurrent update: {0}")]
    Conflict(String),
    /// Anything else: a bug or bad data; retrying will not help.
    #[error("database error: {0}")]
    Data(String),
}

impl StoreError {
    /// Whether retrying may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Data(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Io(_)
            | E::Tls(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::Protocol(_) => StoreError::Unavailable(e.to_string()),
            E::Database(db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let conflict = db.is_unique_violation()
                    || matches!(
                        code.as_str(),
                        "40001" | "40P01" | "5" | "6" | "517" | "261" | "262"
                    )
                    || code.starts_with("55P03");
                let unavailable = code.starts_with("08") || code.starts_with("57P");
                if conflict {
                    StoreError::Conflict(format!("{} ({code})", db.message()))
                } else if unavailable {
                    StoreError::Unavailable(format!("{} ({code})", db.message()))
                } else {
                    StoreError::Data(format!("{} ({code})", db.message()))
                }
            }
            _ => StoreError::Data(e.to_string()),
        }
    }
}

/// The store. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    fingerprint_key: String,
    /// Every timestamp the store writes or compares with (milliseconds since the Unix epoch).
    clock: Clock,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

const MIGRATIONS_POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../migrations/postgres/0001_init.sql")),
    (
        2,
        include_str!("../migrations/postgres/0002_operations.sql"),
    ),
    (3, include_str!("../migrations/postgres/0003_callbacks.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_review_desk.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_effect_commands.sql"),
    ),
    (6, include_str!("../migrations/postgres/0006_hall_desk.sql")),
    (7, include_str!("../migrations/postgres/0007_scheduled.sql")),
    (8, include_str!("../migrations/postgres/0008_retention.sql")),
    (
        9,
        include_str!("../migrations/postgres/0009_scheduled_state.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_producers.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_materials_erased.sql"),
    ),
    (
        12,
        include_str!("../migrations/postgres/0012_case_materials.sql"),
    ),
];
const MIGRATIONS_SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../migrations/sqlite/0002_operations.sql")),
    // portable SQL from here on: one file serves both backends
    (3, include_str!("../migrations/postgres/0003_callbacks.sql")),
    (
        4,
        include_str!("../migrations/postgres/0004_review_desk.sql"),
    ),
    (
        5,
        include_str!("../migrations/postgres/0005_effect_commands.sql"),
    ),
    (6, include_str!("../migrations/postgres/0006_hall_desk.sql")),
    (7, include_str!("../migrations/postgres/0007_scheduled.sql")),
    (8, include_str!("../migrations/postgres/0008_retention.sql")),
    (
        9,
        include_str!("../migrations/postgres/0009_scheduled_state.sql"),
    ),
    (
        10,
        include_str!("../migrations/postgres/0010_producers.sql"),
    ),
    (
        11,
        include_str!("../migrations/postgres/0011_materials_erased.sql"),
    ),
    // JSON differs: its own file.
    (
        12,
        include_str!("../migrations/sqlite/0012_case_materials.sql"),
    ),
];

impl Store {
    /// Connects to `postgres://…` or `sqlite://FILE` (created when missing) and applies the
    /// migrations. `fingerprint_key` keys the ID-number digests used for duplicate detection.
    pub async fn connect(url: &str, fingerprint_key: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, fingerprint_key, 8).await
    }

    /// [`Store::connect`] with at most `pool_size` PostgreSQL connections (SQLite always uses one).
    /// Each consumer, the relay and the timers hold one at a time; size the database's
    /// `max_connections` for the sum over all processes.
    pub async fn connect_with(
        url: &str,
        fingerprint_key: &str,
        pool_size: u32,
    ) -> Result<Store, StoreError> {
        install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_owned())
        } else if let Some(rest) = url.strip_prefix("sqlite:") {
            let mut u = format!("sqlite:{rest}");
            if !rest.contains("mode=") && !rest.contains(":memory:") {
                u.push_str(if rest.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
            (Backend::Sqlite, u)
        } else {
            return Err(StoreError::Data(
                "DATABASE_URL must start with postgres:// or sqlite://".into(),
            ));
        };
        let options = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(10));
        let pool = match backend {
            // One connection: SQLite has one writer, and a single connection never meets
            // SQLITE_BUSY on a read-to-write upgrade. The embedded default is for one process.
            Backend::Sqlite => options
                .max_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute("PRAGMA journal_mode=WAL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON")
                            .await
                            .map(|_| ())
                    })
                })
                .connect(&url)
                .await?,
            Backend::Postgres => options.max_connections(pool_size.max(1)).connect(&url).await?,
        };
        let store = Store {
            pool,
            backend,
            fingerprint_key: fingerprint_key.to_owned(),
            clock: Clock::system(),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The store reading `clock` for every timestamp (the process's one clock).
    pub fn with_clock(mut self, clock: Clock) -> Store {
        self.clock = clock;
        self
    }

    /// The clock every timestamp of the store is read from.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The key for ID-number fingerprints.
    pub fn fingerprint_key(&self) -> &str {
        &self.fingerprint_key
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        if self.backend == Backend::Postgres {
            // Several processes may start at once: one migrates, the others wait.
            sqlx::query("SELECT pg_advisory_xact_lock(7170111)")
                .execute(&mut *tx)
                .await?;
        }
        // Only create the table when it is missing: a worker role without CREATE on the schema
        // (deploy/postgres/roles.sql) connects to a migrated schema without needing it.
        let exists_sql = match self.backend {
            Backend::Postgres => {
                "SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = 'schema_migrations'"
            }
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            }
        };
        let exists: i64 = sqlx::query_scalar(exists_sql).fetch_one(&mut *tx).await?;
        if exists == 0 {
            sqlx::query("CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)")
                .execute(&mut *tx)
                .await?;
        }
        let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
            .fetch_all(&mut *tx)
            .await?;
        let migrations = match self.backend {
            Backend::Postgres => MIGRATIONS_POSTGRES,
            Backend::Sqlite => MIGRATIONS_SQLITE,
        };
        for (version, sql) in migrations {
            if applied.contains(version) {
                continue;
            }
            sqlx::raw_sql(*sql).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)")
                .bind(*version)
                .bind(self.clock.now_ms())
                .execute(&mut *tx)
                .await?;
            tracing::info!(version, "applied store migration");
        }
        tx.commit().await?;
        Ok(())
    }

    /// Begins a handler's transaction.
    pub async fn begin(&self) -> Result<CaseTx, StoreError> {
        Ok(CaseTx::new(
            self.pool.begin().await?,
            self.backend,
            self.fingerprint_key.clone(),
            self.clock.clone(),
        ))
    }

    /// Takes up to `limit` unpublished outbox rows, oldest first: of every producer, or with
    /// `producers` only of those (a process relays what its own broker user may publish; rows
    /// written before producers were recorded count as `http`'s). On PostgreSQL the rows are
    /// locked (`FOR UPDATE SKIP LOCKED`) so relays in several processes never publish the same
    /// row at once.
    pub async fn begin_relay(
        &self,
        limit: i64,
        producers: Option<&[&'static str]>,
    ) -> Result<RelayBatch, StoreError> {
        let mut tx = self.pool.begin().await?;
        let only = producers.map_or_else(String::new, producer_filter);
        let lock = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        // The names are our own role names (checked by `producer_filter`), never input.
        let sql = format!(
            "SELECT id, routing_key, payload FROM outbox WHERE published_at IS NULL{only} ORDER BY id LIMIT $1{lock}"
        );
        let rows: Vec<(i64, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?;
        Ok(RelayBatch {
            tx,
            rows,
            backend: self.backend,
            clock: self.clock.clone(),
        })
    }

    /// The number of unpublished outbox rows.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

/// ` AND producer IN (…)` for the relay of `producers`; `http` also takes rows without one.
fn producer_filter(producers: &[&'static str]) -> String {
    let mut names: Vec<String> = producers
        .iter()
        .map(|p| {
            assert!(
                !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()),
                "a producer is a role name: {p:?}"
            );
            format!("'{p}'")
        })
        .collect();
    if producers.contains(&HTTP_PRODUCER) {
        names.push("''".into());
    }
    if names.is_empty() {
        return " AND 1 = 0".into();
    }
    format!(" AND producer IN ({})", names.join(","))
}

/// The producer of the events the HTTP surface writes: parties' reports, the desks' decisions,
/// operators' corrections (see [`Store::begin_relay`]).
pub const HTTP_PRODUCER: &str = "http";

/// A batch of outbox rows taken by the relay; [`RelayBatch::complete`] marks them published.
/// Dropping the batch without completing it leaves them for the next attempt.
pub struct RelayBatch {
    tx: sqlx::Transaction<'static, sqlx::Any>,
    rows: Vec<(i64, String, String)>,
    backend: Backend,
    clock: Clock,
}

impl RelayBatch {
    /// `(routing key, envelope JSON)` of each row, oldest first.
    pub fn messages(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rows.iter().map(|(_, k, p)| (k.as_str(), p.as_str()))
    }

    /// How many rows the batch holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Marks the rows published (after the broker confirmed them) and commits.
    ///
    /// One statement for the batch, and on PostgreSQL without waiting for the WAL flush
    /// (`synchronous_commit = off` for this transaction only): losing the mark in a crash only
    /// means the rows are published again, which the consumers' inboxes make harmless — the
    /// same case as a crash between publish and mark. Handler transactions stay synchronous.
    pub async fn complete(mut self) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        // The ids are our own integers: nothing from outside reaches this SQL text. Sent as
        // one simple query (one round trip, nothing prepared: the text is never the same twice,
        // and a prepared copy would push the handlers' statements out of the connection's cache).
        let ids: Vec<String> = self.rows.iter().map(|(id, _, _)| id.to_string()).collect();
        let asynchronous = match self.backend {
            Backend::Postgres => "SET LOCAL synchronous_commit TO OFF; ",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "{asynchronous}UPDATE outbox SET published_at = {} WHERE id IN ({})",
            self.clock.now_ms(),
            ids.join(",")
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok(())
    }
}
