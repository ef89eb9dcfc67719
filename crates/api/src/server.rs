//! The HTTP server: hyper's HTTP/1.1 under our own accept loop, so that no single client can
//! exhaust the process.
//!
//! - **Header-read timeout**: a connection that has not sent a request's whole head within
//!   [`HttpLimits::header_read_timeout`] — a new one, or a kept-alive one between requests — is
//!   closed (hyper starts the timer as soon as it waits for a head).
//! - **Request timeout**: a request not answered within [`HttpLimits::request_timeout`] (a body
//!   trickled in, a handler stuck on the database) gets 408 and its connection is closed.
//! - **Connection cap**: at most [`HttpLimits::max_connections`] connections are open. At the cap,
//!   a new connection closes the one idle longest (waiting for a request head, as nginx reuses
//!   idle keep-alive connections), so probes and real clients get through while someone holds
//!   idle sockets open; only when every connection is busy is the new one refused.
//! - **Failed authentication** is counted per client address (see [`AuthFailures`]).

use crate::AppState;
use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tower::ServiceExt;

/// The limits of the HTTP server.
#[derive(Clone, Debug)]
pub struct HttpLimits {
    /// Connections open at once (`WANGBAN_HTTP_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Time to send a request's head, idle time between requests included
    /// (`WANGBAN_HTTP_HEADER_TIMEOUT_SECS`).
    pub header_read_timeout: Duration,
    /// Time to receive a request's body and answer it (`WANGBAN_HTTP_REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    /// Failed token checks one client address may make per minute before it is refused with
    /// 429 for the rest of the minute (`WANGBAN_HTTP_AUTH_FAILURES_PER_MINUTE`).
    pub auth_failures_per_minute: u32,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            auth_failures_per_minute: 20,
        }
    }
}

/// The client's address, in every request's extensions (absent for requests that did not come
/// through [`serve`], such as tests calling the router directly).
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// Counters of the HTTP server, exported at `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub open: AtomicU64,
    pub accepted: AtomicU64,
    /// Idle connections closed to make room for a new one.
    pub evicted: AtomicU64,
    /// New connections refused because every connection was busy.
    pub refused: AtomicU64,
    pub timed_out: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Requests refused with 429 after too many failed authentications.
    pub auth_throttled: AtomicU64,
}

impl HttpStats {
    /// Writes the counters in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP wangban_http_connections HTTP connections open.\n# TYPE wangban_http_connections gauge\nwangban_http_connections {}",
            n(&self.open)
        );
        let counters = [
            (
                "connections_accepted",
                "HTTP connections accepted.",
                &self.accepted,
            ),
            (
                "connections_evicted",
                "Idle HTTP connections closed to make room at the connection cap.",
                &self.evicted,
            ),
            (
                "connections_refused",
                "HTTP connections refused at the cap, every connection busy.",
                &self.refused,
            ),
            (
                "requests_timed_out",
                "HTTP requests answered 408 after the request timeout.",
                &self.timed_out,
            ),
            (
                "auth_failures",
                "Requests with an unknown bearer token.",
                &self.auth_failures,
            ),
            (
                "auth_throttled",
                "Requests refused with 429 after too many failed authentications from their address.",
                &self.auth_throttled,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP wangban_http_{name}_total {help}\n# TYPE wangban_http_{name}_total counter\nwangban_http_{name}_total {}",
                n(c)
            );
        }
    }
}

/// Failed authentications per client address in the current minute.
#[derive(Debug)]
pub struct AuthFailures {
    limit: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    pub fn new(per_minute: u32) -> AuthFailures {
        AuthFailures {
            limit: per_minute,
            window: Duration::from_secs(60),
            seen: Mutex::default(),
        }
    }

    /// Seconds until `ip` may try again, if it has used up its failures of the minute.
    pub fn blocked(&self, ip: IpAddr) -> Option<u64> {
        let seen = self.seen.lock().expect("auth failures lock");
        let (since, n) = seen.get(&ip)?;
        let left = self.window.checked_sub(since.elapsed())?;
        (*n >= self.limit).then(|| left.as_secs().max(1))
    }

    /// Counts a failed authentication of `ip`.
    pub fn record(&self, ip: IpAddr) {
        let mut seen = self.seen.lock().expect("auth failures lock");
        let window = self.window;
        if seen.len() > 100_000 {
            seen.retain(|_, (since, _)| since.elapsed() < window); // spread over many addresses
        }
        let entry = seen.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= window {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// The open connections and which are idle (waiting for a request head), for the cap.
#[derive(Default)]
struct Connections {
    next: u64,
    /// Idle connections by the time they became idle (and their id), oldest first.
    idle: BTreeMap<(Instant, u64), Arc<tokio::sync::Notify>>,
    /// Every open connection: when it became idle (`None` while it is answering a request).
    open: HashMap<u64, (Option<Instant>, Arc<tokio::sync::Notify>)>,
}

impl Connections {
    /// Admits a new connection (closing the longest-idle one at the cap): its id and the signal
    /// that asks it to close. `None` when every connection is busy.
    fn admit(&mut self, max: usize, stats: &HttpStats) -> Option<(u64, Arc<tokio::sync::Notify>)> {
        if self.open.len() >= max {
            let (&(since, id), _) = self.idle.iter().next()?;
            if let Some(close) = self.idle.remove(&(since, id)) {
                close.notify_one();
            }
            self.open.remove(&id);
            stats.evicted.fetch_add(1, Ordering::Relaxed);
        }
        self.next += 1;
        let (id, now) = (self.next, Instant::now());
        let close = Arc::new(tokio::sync::Notify::new());
        self.idle.insert((now, id), close.clone());
        self.open.insert(id, (Some(now), close.clone()));
        Some((id, close))
    }

    fn busy(&mut self, id: u64) {
        if let Some((since, _)) = self.open.get_mut(&id)
            && let Some(at) = since.take()
        {
            self.idle.remove(&(at, id));
        }
    }

    fn idle(&mut self, id: u64) {
        if let Some((since, close)) = self.open.get_mut(&id)
            && since.is_none()
        {
            let now = Instant::now();
            *since = Some(now);
            self.idle.insert((now, id), close.clone());
        }
    }

    fn closed(&mut self, id: u64) {
        if let Some((Some(at), _)) = self.open.remove(&id) {
            self.idle.remove(&(at, id));
        }
    }
}

/// Answers 408 to a request that takes longer than `limit`, and logs every request.
async fn time_limited(
    limit: Duration,
    stats: Arc<HttpStats>,
    app: Router,
    req: Request,
) -> Response {
    let started = Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_owned());
    let peer = req
        .extensions()
        .get::<PeerAddr>()
        .map_or_else(|| "-".to_owned(), |p| p.0.ip().to_string());
    let response = answer_within(limit, stats, app, req).await;
    // The access log: the path without its query, the client's address, never a header or body.
    let (status, took_ms) = (
        response.status().as_u16(),
        started.elapsed().as_millis() as u64,
    );
    if matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics") {
        tracing::debug!(target: "wangban::access", %method, path, status, took_ms, %peer, "request");
    } else {
        tracing::info!(target: "wangban::access", %method, path, status, took_ms, %peer, "request");
    }
    response
}

async fn answer_within(
    limit: Duration,
    stats: Arc<HttpStats>,
    app: Router,
    req: Request,
) -> Response {
    match tokio::time::timeout(limit, app.oneshot(req)).await {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) => {
            stats.timed_out.fetch_add(1, Ordering::Relaxed);
            let mut r = crate::error_response(
                StatusCode::REQUEST_TIMEOUT,
                "the request took longer than the server allows",
            );
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            r
        }
    }
}

/// Serves `state`'s router on `listener` with `limits` until `shutdown` resolves, then lets
/// the open requests finish (for at most the request timeout).
pub async fn serve(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = state.http_limits.clone();
    let stats = state.http_stats.clone();
    let app = crate::router(state);
    let connections = Arc::new(Mutex::new(Connections::default()));
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors, say: wait a moment rather than spin.
                    tracing::warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        while tasks.try_join_next().is_some() {}
        let admitted = connections
            .lock()
            .expect("connections lock")
            .admit(limits.max_connections, &stats);
        let Some((id, evict)) = admitted else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(peer = %peer.ip(), "HTTP connection refused: every connection is busy");
            drop(stream);
            continue;
        };
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        let (app, conns, stats, limits) = (
            app.clone(),
            connections.clone(),
            stats.clone(),
            limits.clone(),
        );
        let mut closing = closing_rx.clone();
        tasks.spawn(async move {
            let service = {
                let conns = conns.clone();
                let stats = stats.clone();
                hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
                    conns.lock().expect("connections lock").busy(id);
                    req.extensions_mut().insert(PeerAddr(peer));
                    let (conns, stats, app) = (conns.clone(), stats.clone(), app.clone());
                    let limit = limits.request_timeout;
                    async move {
                        let req = req.map(axum::body::Body::new);
                        let response = time_limited(limit, stats, app, req).await;
                        conns.lock().expect("connections lock").idle(id);
                        Ok::<_, std::convert::Infallible>(response)
                    }
                })
            };
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = evict.notified() => conn.as_mut().graceful_shutdown(),
                _ = closing.changed() => conn.as_mut().graceful_shutdown(),
            }
            // After a graceful shutdown: the request in progress, if any, is answered.
            let _ = tokio::time::timeout(limits.request_timeout, conn).await;
            conns.lock().expect("connections lock").closed(id);
            stats.open.fetch_sub(1, Ordering::Relaxed);
        });
    }
    let _ = closing.send(true);
    let deadline = limits.request_timeout + Duration::from_secs(1);
    let _ = tokio::time::timeout(deadline, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_cap_the_longest_idle_connection_makes_room() {
        let stats = HttpStats::default();
        let mut c = Connections::default();
        let (a, close_a) = c.admit(2, &stats).unwrap();
        let (b, _) = c.admit(2, &stats).unwrap();
        c.busy(a);
        c.busy(b);
        assert!(c.admit(2, &stats).is_none(), "both busy: refused");
        c.idle(a);
        let (_, _) = c.admit(2, &stats).expect("a is idle: it makes room");
        assert_eq!(stats.evicted.load(Ordering::Relaxed), 1);
        assert!(!c.open.contains_key(&a));
        // a was asked to close (the permit is stored for its task to take).
        let waker = futures_like_now(close_a);
        assert!(waker, "the evicted connection was told to close");
        c.closed(b);
        assert_eq!(c.open.len(), 1);
    }

    /// Whether `notify` holds a permit, without waiting.
    fn futures_like_now(notify: Arc<tokio::sync::Notify>) -> bool {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(10), notify.notified())
                .await
                .is_ok()
        })
    }

    #[test]
    fn failed_authentications_are_limited_per_address_for_the_minute() {
        let f = AuthFailures::new(3);
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..2 {
            f.record(a);
        }
        assert_eq!(f.blocked(a), None);
        f.record(a);
        assert!(f.blocked(a).is_some_and(|s| (1..=60).contains(&s)));
        assert_eq!(f.blocked(b), None, "another address is not affected");
    }
}
