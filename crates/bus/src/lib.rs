//! The bus: how workers exchange events.
//!
//! One abstraction ([`Bus`]) with two backends that keep the same semantics:
//! - [`amqp::AmqpBus`] on RabbitMQ (lapin): a topic exchange of events, a durable quorum queue per
//!   worker, publisher confirms, manual acks, a dead-letter exchange and a dead-letter queue per
//!   worker, and a delivery limit that stops poison messages from looping.
//! - [`memory::MemoryBus`] in process, for `wangban demo` on a bare machine: topic routing,
//!   at-least-once delivery (an unsettled delivery is requeued when dropped), dead letters.
//!
//! The runtime only ever sees [`Bus`], [`Subscription`] and [`Delivery`].

pub mod amqp;
pub mod memory;
mod topology;

pub use topology::{Topology, WorkerQueue, password_hash, topic_matches};

use async_trait::async_trait;

/// A bus error, classified once.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached or the channel closed: retry after a pause.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused a message (negative confirm): retry.
    #[error("broker refused the message: {0}")]
    Nacked(String),
    /// Misconfiguration (e.g. a queue declared with other arguments): needs an operator.
    #[error("bus configuration: {0}")]
    Config(String),
}

/// A message to publish.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub routing_key: String,
    /// The event id; set as the AMQP `message_id`.
    pub message_id: String,
    pub payload: Vec<u8>,
    /// The event's W3C `traceparent`, sent as an AMQP header of that name as well.
    pub traceparent: Option<String>,
}

/// Why a message was dead-lettered; travels as headers. Must never hold personal data.
#[derive(Clone, Debug)]
pub struct DeadLetterNote<'a> {
    pub reason: &'a str,
    pub event_type: Option<&'a str>,
    pub event_id: Option<&'a str>,
}

/// The bus.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Declares exchanges, queues and bindings; idempotent.
    async fn declare(&self, topology: &Topology) -> Result<(), BusError>;
    /// Publishes messages and returns once the broker confirmed every one of them.
    async fn publish(&self, messages: &[Outgoing]) -> Result<(), BusError>;
    /// Puts a refused message into `worker`'s dead-letter queue, with its reason.
    async fn dead_letter(
        &self,
        worker: &str,
        payload: &[u8],
        note: DeadLetterNote<'_>,
    ) -> Result<(), BusError>;
    /// Starts consuming `worker`'s queue with at most `prefetch` unacknowledged deliveries.
    async fn subscribe(
        &self,
        worker: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, BusError>;
    /// The number of ready messages in a queue (`worker`'s queue, or its dead-letter queue).
    async fn depth(&self, worker: &str, dead_letters: bool) -> Result<u32, BusError>;
    /// Ready messages and consumers of `worker`'s queue and of its dead-letter queue.
    async fn stats(&self, worker: &str) -> Result<QueueStats, BusError>;
    /// Puts a message straight into `worker`'s queue (replaying a dead letter to that worker only).
    async fn send_to_queue(&self, worker: &str, payload: &[u8]) -> Result<(), BusError>;
    /// Whether the broker can be reached (connects if needed).
    async fn ping(&self) -> Result<(), BusError>;
    /// Deletes every queue and exchange of the topology (for throw-away prefixes: tests, demos).
    async fn teardown(&self, topology: &Topology) -> Result<(), BusError>;
}

/// What the broker says about a worker's queues.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct QueueStats {
    pub ready: u32,
    pub consumers: u32,
    pub dead_letters: u32,
}

/// A stream of deliveries from one queue.
#[async_trait]
pub trait Subscription: Send {
    /// The next delivery; `None` when the subscription ended (connection lost: subscribe again).
    async fn next(&mut self) -> Option<Result<Delivery, BusError>>;
}

/// One delivery. Settle it exactly once with [`Delivery::ack`] or [`Delivery::requeue`]; a
/// delivery dropped unsettled goes back to its queue (the broker does this when a channel closes).
pub struct Delivery {
    pub payload: Vec<u8>,
    pub routing_key: String,
    pub redelivered: bool,
    settler: Box<dyn Settle>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("bytes", &self.payload.len())
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

#[async_trait]
pub(crate) trait Settle: Send + Sync {
    async fn ack(&self) -> Result<(), BusError>;
    async fn requeue(&self) -> Result<(), BusError>;
}

impl Delivery {
    pub(crate) fn new(
        payload: Vec<u8>,
        routing_key: String,
        redelivered: bool,
        settler: Box<dyn Settle>,
    ) -> Self {
        Delivery {
            payload,
            routing_key,
            redelivered,
            settler,
        }
    }

    /// The message is done with (handled, or dead-lettered by us).
    pub async fn ack(self) -> Result<(), BusError> {
        self.settler.ack().await
    }

    /// Give the message back to the queue for another attempt (counts toward the delivery limit).
    pub async fn requeue(self) -> Result<(), BusError> {
        self.settler.requeue().await
    }
}
