//! Ingress: events from outside. The portal's submissions are published straight to the bus with
//! confirms; what the HTTP surface takes (parties' reports, operators' corrections) is committed
//! to the outbox as `http`'s, for a relay allowed to publish it. The consumers' inboxes and the
//! lifecycle make a repeated or late one harmless.

use async_trait::async_trait;
use serde_json::Value;
use wangban_bus::{Bus, BusError, Outgoing};
use wangban_domain::clock::Clock;
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::ids::{CaseId, EventId};
use wangban_providers::Ingress;

/// Publishes `event` to the bus, confirmed.
pub async fn publish(bus: &dyn Bus, event: &Envelope) -> Result<(), BusError> {
    let out = Outgoing {
        routing_key: event.routing_key(),
        message_id: event.id.to_string(),
        payload: event.encode(),
        traceparent: event.traceparent.clone(),
    };
    bus.publish(&[out]).await
}

/// A fresh ingress event from `source` about `case`, timed by `clock`.
pub fn event(
    clock: &Clock,
    kind: EventType,
    source: &str,
    case: &CaseId,
    id: Option<EventId>,
    data: Value,
) -> Envelope {
    let id = id.unwrap_or_else(|| EventId::from_random(*uuid::Uuid::new_v4().as_bytes()));
    Envelope::new(id, kind, source, clock.now(), case.clone(), None, data)
}

/// The [`Ingress`] the simulated parties answer through.
pub struct BusIngress {
    pub runtime: crate::Runtime,
    pub source: String,
}

#[async_trait]
impl Ingress for BusIngress {
    async fn report(&self, kind: EventType, case: &CaseId, data: Value) -> Result<(), String> {
        let mut event = event(
            self.runtime.store.clock(),
            kind,
            &self.source,
            case,
            None,
            data,
        );
        // An answer given during a call belongs under the call's span, as a real party's
        // callback carrying the traceparent it was sent would.
        event.traceparent = wangban_providers::current_traceparent();
        self.runtime.queue_ingress(&event).await
    }
}

impl crate::Runtime {
    /// Takes an event from outside that the HTTP surface received (a party's report, an
    /// operator's correction; also the simulated parties' answers): queued in the outbox as
    /// [`wangban_store::HTTP_PRODUCER`]'s and relayed by a process whose broker user may publish
    /// it. Returns once it is committed.
    pub async fn queue_ingress(&self, event: &Envelope) -> Result<(), String> {
        let queued = async {
            let mut tx = self.store.begin().await?;
            tx.enqueue(event, wangban_store::HTTP_PRODUCER).await?;
            tx.commit().await
        };
        queued.await.map_err(|e| e.to_string())?;
        self.relay_wakeup.committed();
        Ok(())
    }
}
