//! The HTTP surface of `wangban serve`: what an orchestrator probes, what Prometheus scrapes, and
//! what operators use.
//!
//! - `GET /healthz` — the process is alive.
//! - `GET /readyz` — the database answers, the broker answers and the topology is declared (503 otherwise).
//! - `GET /metrics` — Prometheus text: this process's counters and histograms, plus outbox backlog,
//!   cases per state and SLA breaches read from the store.
//! - `/api/ops/…` — queues, dead letters (list, replay), case search and timeline, SLA breaches,
//!   state history; every call needs `Authorization: Bearer <WANGBAN_OPERATOR_TOKEN>`.
//! - `POST /callbacks/{sms,payment,production,courier}` — the parties' signed callbacks
//!   ([`callbacks`]).
//! - `GET /dashboard` — the operations page (it asks for the token and keeps it in the tab only).
//! - `/api/review/…` — the reviewer API of the staffed review desk, each reviewer with their own
//!   token ([`review`]); `GET /api/review/openapi.json` describes it; `GET /review` is the
//!   reviewers' console.
//!
//! - `/api/hall/…` — the hall desk: the staff of the pickup halls record a document's arrival and
//!   hand it over after checking the applicant's ID number ([`hall`]); `GET /hall` is their
//!   console.
//!
//! Searches by ID number are `POST`ed, so the number never appears in a URL or an access log.

pub mod callbacks;
pub mod hall;
mod ops;
mod pages;
pub mod review;
pub mod server;
pub mod sla;

pub use server::{AuthFailures, HttpLimits, HttpStats, PeerAddr};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wangban_bus::Topology;
use wangban_domain::calendar::WorkingCalendar;
use wangban_runtime::Runtime;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub runtime: Runtime,
    pub topology: Topology,
    pub calendar: WorkingCalendar,
    /// Working days a case may wait for a review decision before it counts as a breach.
    pub review_working_days: u32,
    /// The payment window (a case still awaiting payment after it means the clock is behind).
    pub payment_window: Duration,
    /// `None`: the operations API is closed.
    pub operator_token: Option<Arc<str>>,
    /// The parties whose signed callbacks are taken at `/callbacks/{party}`.
    pub callbacks: callbacks::CallbackKeys,
    /// Review rounds a case may have: no correction may be requested in the last.
    pub review_max_rounds: i64,
    /// How long a document may wait at the hall's counter before it is listed as uncollected.
    pub hall_uncollected_after: Duration,
    /// The HTTP server's limits, its counters, and failed authentications per client address.
    pub http_limits: HttpLimits,
    pub http_stats: Arc<HttpStats>,
    pub auth_failures: Arc<AuthFailures>,
    /// Where the applicants' uploads are (`None`: the reviewer API serves no images).
    pub materials: Option<Arc<dyn wangban_materials::MaterialStore>>,
}

/// The router of every endpoint.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/metrics/store", get(store_metrics))
        .route(
            "/dashboard",
            get(|| async { pages::page(include_str!("dashboard.html")) }),
        )
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/dashboard") }),
        )
        .route("/api/ops/openapi.json", get(ops::openapi))
        .route("/api/ops/queues", get(ops::queues))
        .route("/api/ops/dead-letters", get(ops::dead_letters))
        .route("/api/ops/dead-letters/{id}/replay", post(ops::replay_one))
        .route("/api/ops/dead-letters/replay", post(ops::replay_all))
        .route("/api/ops/search", post(ops::search))
        .route("/api/ops/cases/{id}", get(ops::case))
        .route("/api/ops/sla", get(ops::sla))
        .route("/api/ops/history", get(ops::history))
        .route("/api/ops/cases/{id}/payment", get(ops::payment))
        .route("/api/ops/refunds", get(ops::refunds))
        .route("/api/ops/delivery-problems", get(ops::delivery_problems))
        .route(
            "/api/ops/cases/{id}/return-to-hall",
            post(ops::return_to_hall),
        )
        .route("/api/ops/review-desk", get(ops::review_desk))
        .route("/api/ops/materials", get(ops::materials))
        .route("/api/ops/effects", get(ops::effects))
        .route(
            "/api/ops/effects/{case_id}/{purpose}/retry",
            post(ops::retry_effect),
        )
        .route("/callbacks/{party}", post(callbacks::receive))
        .route(
            "/review",
            get(|| async { pages::page(include_str!("review.html")) }),
        )
        .route("/api/review/openapi.json", get(review::openapi))
        .route("/api/review/me", get(review::me))
        .route("/api/review/me/availability", post(review::availability))
        .route("/api/review/tasks", get(review::tasks))
        .route("/api/review/tasks/claim", post(review::claim))
        .route("/api/review/queues", get(review::queues))
        .route("/api/review/cases/{case_id}", get(review::case))
        .route("/api/review/cases/{case_id}/decision", post(review::decide))
        .route("/api/review/cases/{case_id}/release", post(review::release))
        .route(
            "/api/review/cases/{case_id}/materials/{sha256}",
            get(review::material),
        )
        .route(
            "/hall",
            get(|| async { pages::page(include_str!("hall.html")) }),
        )
        .route("/api/hall/openapi.json", get(hall::openapi))
        .route("/api/hall/me", get(hall::me))
        .route("/api/hall/documents", get(hall::documents))
        .route("/api/hall/documents/{case_id}/arrived", post(hall::arrived))
        .route("/api/hall/documents/{case_id}/collect", post(hall::collect))
        .layer(axum::middleware::from_fn(pages::headers))
        .with_state(state)
}

/// Serves every endpoint on `listener` until `shutdown` resolves (see [`server`]).
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    server::serve(state, listener, shutdown).await
}

async fn readyz(State(s): State<AppState>) -> Response {
    let database = match s.runtime.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => format!("unreachable: {e}"),
    };
    let broker = match tokio::time::timeout(Duration::from_secs(3), s.runtime.bus.ping()).await {
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(e)) => format!("unreachable: {e}"),
        Err(_) => "unreachable: no answer within 3 s".to_string(),
    };
    let declared = s.runtime.declared.load(Ordering::SeqCst);
    let ready = database == "ok" && broker == "ok" && declared;
    let body = json!({"ready": ready, "database": database, "broker": broker,
                      "topology": if declared { "declared" } else { "not declared" }});
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `/metrics`: this process's own counters — scrape every process and `sum()` them.
async fn metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    s.runtime.metrics.render(&mut out);
    s.http_stats.render(&mut out);
    process_metrics(&mut out);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// `/metrics/store`: what the database says of the whole deployment (cases per state, backlogs,
/// SLA breaches) — the same from every process, read with SQL on each scrape: scrape one.
async fn store_metrics(State(s): State<AppState>) -> Response {
    let mut out = String::new();
    use std::fmt::Write;
    if let Ok(n) = s.runtime.store.outbox_backlog().await {
        gauge(
            &mut out,
            "wangban_outbox_backlog",
            "Committed events not yet published.",
            n,
        );
    }
    if let Ok(effects) = s.runtime.store.effect_counts_by_party().await {
        let _ = writeln!(
            out,
            "# HELP wangban_effect_commands Effects not carried out, by party and state: pending (being tried) and dead (given up, for an operator).\n# TYPE wangban_effect_commands gauge"
        );
        for (party, state, n) in &effects.by_party {
            let _ = writeln!(
                out,
                "wangban_effect_commands{{party=\"{party}\",state=\"{state}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP wangban_effect_oldest_pending_seconds Age of the oldest effect not yet carried out, by party.\n# TYPE wangban_effect_oldest_pending_seconds gauge"
        );
        for (party, ms) in &effects.oldest_pending_ms {
            let _ = writeln!(
                out,
                "wangban_effect_oldest_pending_seconds{{party=\"{party}\"}} {}",
                *ms as f64 / 1000.0
            );
        }
    }
    if let Ok(counts) = s.runtime.store.count_by_state().await {
        let _ = writeln!(
            out,
            "# HELP wangban_cases Cases per lifecycle state.\n# TYPE wangban_cases gauge"
        );
        for state in wangban_domain::lifecycle::State::ALL {
            let n = counts.get(state.as_str()).copied().unwrap_or(0);
            let _ = writeln!(out, "wangban_cases{{state=\"{state}\"}} {n}");
        }
    }
    if let Ok(b) = sla::breaches(&s).await {
        let _ = writeln!(
            out,
            "# HELP wangban_sla_breaches Cases past a promise now: review clock, payment window, 3-working-day production, 7 working days from acceptance to issue.\n# TYPE wangban_sla_breaches gauge"
        );
        let breaches = [
            ("review_clock", &b.review_clock),
            ("payment_window", &b.payment_window),
            ("production", &b.production),
            ("approval_and_issue", &b.approval_and_issue),
        ];
        for (sla, cases) in breaches {
            let _ = writeln!(out, "wangban_sla_breaches{{sla=\"{sla}\"}} {}", cases.len());
        }
        // All-time counts, read from the record: counters.
        let counters = [
            (
                "wangban_production_completed_late_total",
                "Production orders completed after the 3-working-day promise.",
                b.production_completed_late.len(),
            ),
            (
                "wangban_review_escalations_total",
                "Review tasks escalated to a supervisor queue when the review clock ran out.",
                b.review_escalated.len(),
            ),
        ];
        for (name, help, n) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {n}"
            );
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The build (`wangban_build_info`, always 1) and the Prometheus client libraries' standard
/// process metrics, read from `/proc/self` (Linux; left out elsewhere).
fn process_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP wangban_build_info The running build: always 1, the version in its label.\n# TYPE wangban_build_info gauge\nwangban_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may contain spaces) from its closing parenthesis.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n).and_then(|f| f.parse::<f64>().ok());
    // proc(5): utime and stime (fields 14, 15) and starttime (22, since boot) in clock ticks,
    // which /proc reports at USER_HZ = 100 per second on every architecture; `fields` starts
    // at field 3.
    let ticks = 100.0;
    if let (Some(user), Some(system)) = (field(11), field(12)) {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}",
            (user + system) / ticks
        );
    }
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        });
    if let Some(kib) = rss_kib {
        gauge(
            out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            kib * 1024.0,
        );
    }
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|b| b.trim().parse::<f64>().ok())
    });
    if let (Some(boot), Some(start)) = (boot, field(19)) {
        gauge(
            out,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            boot + start / ticks,
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            out,
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count(),
        );
    }
}

/// Writes an unlabelled gauge with its HELP and TYPE lines.
fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// An operations call with the operator's bearer token: 503 while the operations API is closed
/// (no `WANGBAN_OPERATOR_TOKEN`), 401 without the token — before any handler runs.
pub(crate) struct Operator;

impl axum::extract::FromRequestParts<AppState> for Operator {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Operator, Response> {
        let Some(token) = state.operator_token.clone() else {
            return Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "the operations API is closed: set WANGBAN_OPERATOR_TOKEN",
            ));
        };
        authenticate(
            parts,
            state,
            ("an operator", "operator"),
            |given| async move {
                Ok(constant_time_eq(given.as_bytes(), token.as_bytes()).then_some(Operator))
            },
        )
        .await
    }
}

/// An application error as JSON: `{"error": "…"}`.
pub(crate) fn error_response(status: StatusCode, error: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"error": error.to_string()}))).into_response()
}

/// A 500 naming what failed (never personal data: store and broker errors only).
pub(crate) fn internal(e: impl std::fmt::Display) -> Response {
    error_response(StatusCode::INTERNAL_SERVER_ERROR, e)
}

/// Who the request's bearer token names, by `lookup`: 401 (with `WWW-Authenticate: Bearer`)
/// without a token or with one `lookup` does not know. A client address that has failed
/// [`server::HttpLimits::auth_failures_per_minute`] times this minute gets 429 with
/// `Retry-After` and its token is not looked at; every failure is logged (with the address, never
/// the token) and counted in `/metrics`. `who` is the kind of token, with and without its article.
pub(crate) async fn authenticate<T, F, Fut>(
    parts: &axum::http::request::Parts,
    s: &AppState,
    who: (&str, &str),
    lookup: F,
) -> Result<T, Response>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, wangban_store::StoreError>>,
{
    let peer = parts.extensions.get::<server::PeerAddr>().map(|p| p.0.ip());
    if let Some(wait) = peer.and_then(|ip| s.auth_failures.blocked(ip)) {
        s.http_stats.auth_throttled.fetch_add(1, Ordering::Relaxed);
        let mut r = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed authentications from this address: try again later",
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(wait));
        return Err(r);
    }
    let unauthorized = |message: String| {
        let mut r = error_response(StatusCode::UNAUTHORIZED, message);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer realm=\"wangban\""),
        );
        r
    };
    let Some(token) = bearer(&parts.headers) else {
        return Err(unauthorized(format!(
            "{} token is required (Authorization: Bearer …)",
            who.0
        )));
    };
    match lookup(token.to_owned()).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => {
            s.http_stats.auth_failures.fetch_add(1, Ordering::Relaxed);
            if let Some(ip) = peer {
                s.auth_failures.record(ip);
            }
            let path = parts.uri.path();
            let peer = peer.map_or_else(|| "-".to_owned(), |ip| ip.to_string());
            tracing::warn!(%peer, path, token = who.1, "authentication failed: unknown token");
            Err(unauthorized(format!("unknown {} token", who.1)))
        }
        Err(e) => Err(internal(e)),
    }
}

/// The bearer token of a request, if it carries a non-empty one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
