//! The outbox relay: publishes committed events in commit order, with publisher confirms, and
//! marks them published only after the broker confirmed them. A crash between the two publishes
//! a batch twice; consumers' inboxes make the second copy a no-op.

use crate::Runtime;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
use wangban_bus::Outgoing;

/// Rows per batch: one round of pipelined confirms.
const BATCH: i64 = 256;

/// How often the relay looks without being woken, and for deadlines.
const POLL: Duration = Duration::from_millis(250);

/// What wakes the relay: this process's commits that queued events. Each counts itself before
/// it wakes the relay, so that a wakeup left over from a commit whose rows a pass already took
/// (it committed before the pass looked) is told from one that needs another pass.
#[derive(Default)]
pub(crate) struct RelayWakeup {
    commits: AtomicU64,
    notify: Notify,
}

impl RelayWakeup {
    /// A commit that queued events has just completed.
    pub(crate) fn committed(&self) {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// The commits so far: read before a pass looks, what they queued is visible to it.
    fn seen(&self) -> u64 {
        self.commits.load(Ordering::SeqCst)
    }

    /// Waits until a commit after `seen`, or for `poll`.
    async fn after(&self, seen: u64, poll: Duration) {
        let poll = tokio::time::sleep(poll);
        tokio::pin!(poll);
        loop {
            tokio::select! {
                _ = self.notify.notified() => if self.seen() != seen { return },
                _ = &mut poll => return,
            }
        }
    }
}

impl Runtime {
    /// Fires the scheduled events whose time has come (into the outbox), then publishes every
    /// pending outbox row once; returns how many were published.
    pub async fn relay_once(&self) -> Result<usize, String> {
        self.relay_once_of(None).await
    }

    /// [`Runtime::relay_once`] for the rows of `producers` only (`None`: all; see
    /// [`wangban_store::Store::begin_relay`]).
    pub async fn relay_once_of(&self, producers: Option<&[&'static str]>) -> Result<usize, String> {
        self.fire_due_all().await?;
        let mut total = 0;
        loop {
            let (n, full) = self.relay_batch(producers).await?;
            total += n;
            if !full {
                return Ok(total);
            }
        }
    }

    /// Moves every scheduled event whose time has come into the outbox.
    async fn fire_due_all(&self) -> Result<(), String> {
        while self
            .store
            .fire_due(BATCH)
            .await
            .map_err(|e| e.to_string())?
            == BATCH as usize
        {}
        Ok(())
    }

    /// Publishes one batch of pending rows: how many, and whether the batch was full (more
    /// may be waiting).
    async fn relay_batch(
        &self,
        producers: Option<&[&'static str]>,
    ) -> Result<(usize, bool), String> {
        let batch = self
            .store
            .begin_relay(BATCH, producers)
            .await
            .map_err(|e| e.to_string())?;
        if batch.is_empty() {
            return Ok((0, false));
        }
        let messages: Vec<Outgoing> = batch
            .messages()
            .map(|(key, payload)| {
                let (message_id, traceparent) = ids_of(payload);
                Outgoing {
                    routing_key: key.to_owned(),
                    message_id,
                    payload: payload.as_bytes().to_vec(),
                    traceparent,
                }
            })
            .collect();
        self.bus
            .publish(&messages)
            .await
            .map_err(|e| e.to_string())?;
        for m in &messages {
            self.metrics.published("relay", &m.routing_key, 1);
        }
        let n = batch.len();
        batch.complete().await.map_err(|e| e.to_string())?;
        Ok((n, n == BATCH as usize))
    }

    /// Relays until shutdown: woken by commits, and every [`POLL`] regardless (events committed
    /// by other processes sharing the database, deadlines come due). After shutdown, one last
    /// flush. Publishes the rows of `producers` only, when given (see [`Runtime::relay_once_of`]).
    ///
    /// A wakeup publishes until a batch is not full — rows committed meanwhile wake it again —
    /// and a wakeup by a commit the last pass already covered is passed over, so that it does not
    /// take a transaction just to find nothing; deadlines are looked for at most every [`POLL`]:
    /// they fall due at a time, not at a commit.
    pub async fn run_relay(
        &self,
        producers: Option<Vec<&'static str>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut pause = Duration::from_millis(50);
        let mut fired: Option<Instant> = None;
        loop {
            let stopping = *shutdown.borrow();
            let seen = self.relay_wakeup.seen();
            let pass = async {
                if stopping || fired.is_none_or(|at| at.elapsed() >= POLL) {
                    self.fire_due_all().await?;
                    fired = Some(Instant::now());
                }
                let mut total = 0;
                loop {
                    let (n, full) = self.relay_batch(producers.as_deref()).await?;
                    total += n;
                    if !full {
                        return Ok::<usize, String>(total);
                    }
                }
            };
            match pass.await {
                Ok(n) => {
                    if n > 0 {
                        tracing::debug!(published = n, "outbox relayed");
                    }
                    pause = Duration::from_millis(50);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
            if stopping {
                return;
            }
            tokio::select! {
                _ = self.relay_wakeup.after(seen, POLL) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

impl Runtime {
    /// Puts a dead letter back into its worker's queue, once: the row is claimed (locked on
    /// PostgreSQL), the message published with a confirm, and the row marked replayed. A crash
    /// between publish and mark may publish it twice; the worker's inbox makes that harmless.
    /// Returns false when there is no unreplayed dead letter with that id.
    pub async fn replay_dead_letter(&self, id: i64) -> Result<bool, String> {
        let Some(claim) = self
            .store
            .claim_dead_letter(id)
            .await
            .map_err(|e| e.to_string())?
        else {
            return Ok(false);
        };
        if claim.payload.is_empty() {
            return Err(format!(
                "dead letter {id} cannot be replayed: retention erased its payload"
            ));
        }
        self.bus
            .send_to_queue(&claim.worker, &claim.payload)
            .await
            .map_err(|e| e.to_string())?;
        claim.complete().await.map_err(|e| e.to_string())?;
        tracing::info!(dead_letter = id, "dead letter replayed");
        Ok(true)
    }
}

/// The event id and `traceparent` of an outbox payload (its envelope's `id` and `traceparent`).
fn ids_of(payload: &str) -> (String, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Ids {
        #[serde(default)]
        id: String,
        #[serde(default)]
        traceparent: Option<String>,
    }
    serde_json::from_str::<Ids>(payload)
        .map_or_else(|_| (String::new(), None), |ids| (ids.id, ids.traceparent))
}
