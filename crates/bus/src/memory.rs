//! The in-process bus: the embedded default when no broker URL is given.
//!
//! Same semantics as the RabbitMQ backend, minus durability across processes: topic routing to
//! per-worker queues, at-least-once delivery (an unsettled delivery that is dropped — a crashed
//! handler — goes back to the front of its queue, marked redelivered), a delivery limit after
//! which a message is dead-lettered, and a dead-letter queue per worker.

use crate::{
    Bus, BusError, DeadLetterNote, Delivery, Outgoing, QueueStats, Settle, Subscription, Topology,
    topic_matches,
};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[derive(Clone)]
struct Message {
    payload: Vec<u8>,
    routing_key: String,
    deliveries: u32,
}

#[derive(Default)]
struct Queue {
    items: Mutex<VecDeque<Message>>,
    notify: Notify,
    dead: Mutex<Vec<Message>>,
    consumers: std::sync::atomic::AtomicU32,
}

impl Queue {
    fn push_back(&self, m: Message) {
        self.items.lock().expect("queue lock").push_back(m);
        self.notify.notify_one();
    }
}

#[derive(Default)]
struct Inner {
    bindings: Vec<(String, String)>, // (pattern, worker)
    queues: HashMap<String, Arc<Queue>>,
    delivery_limit: u32,
}

/// The in-process bus. Clones share the same queues.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<Inner>>,
}

impl MemoryBus {
    /// An empty bus; [`Bus::declare`] creates its queues.
    pub fn new() -> MemoryBus {
        MemoryBus::default()
    }

    fn queue(&self, worker: &str) -> Result<(Arc<Queue>, u32), BusError> {
        let inner = self.inner.lock().expect("bus lock");
        let q =
            inner.queues.get(worker).cloned().ok_or_else(|| {
                BusError::Config(format!("no queue declared for worker `{worker}`"))
            })?;
        Ok((q, inner.delivery_limit))
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn declare(&self, topology: &Topology) -> Result<(), BusError> {
        let mut inner = self.inner.lock().expect("bus lock");
        inner.delivery_limit = topology.delivery_limit.max(1);
        for w in &topology.workers {
            inner.queues.entry(w.worker.clone()).or_default();
            for b in &w.bindings {
                let binding = (b.clone(), w.worker.clone());
                if !inner.bindings.contains(&binding) {
                    inner.bindings.push(binding);
                }
            }
        }
        Ok(())
    }

    async fn publish(&self, messages: &[Outgoing]) -> Result<(), BusError> {
        let inner = self.inner.lock().expect("bus lock");
        for m in messages {
            let mut targets: Vec<&String> = inner
                .bindings
                .iter()
                .filter(|(p, _)| topic_matches(p, &m.routing_key))
                .map(|(_, w)| w)
                .collect();
            targets.dedup();
            for w in targets {
                if let Some(q) = inner.queues.get(w) {
                    q.push_back(Message {
                        payload: m.payload.clone(),
                        routing_key: m.routing_key.clone(),
                        deliveries: 0,
                    });
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        worker: &str,
        payload: &[u8],
        _note: DeadLetterNote<'_>,
    ) -> Result<(), BusError> {
        let (q, _) = self.queue(worker)?;
        q.dead.lock().expect("dead-letter lock").push(Message {
            payload: payload.to_vec(),
            routing_key: worker.into(),
            deliveries: 0,
        });
        Ok(())
    }

    async fn subscribe(
        &self,
        worker: &str,
        _prefetch: u16,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let (queue, limit) = self.queue(worker)?;
        queue.consumers.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemorySubscription { queue, limit }))
    }

    async fn stats(&self, worker: &str) -> Result<QueueStats, BusError> {
        let (q, _) = self.queue(worker)?;
        Ok(QueueStats {
            ready: q.items.lock().expect("queue lock").len() as u32,
            consumers: q.consumers.load(Ordering::SeqCst),
            dead_letters: q.dead.lock().expect("dead-letter lock").len() as u32,
        })
    }

    async fn send_to_queue(&self, worker: &str, payload: &[u8]) -> Result<(), BusError> {
        let (q, _) = self.queue(worker)?;
        q.push_back(Message {
            payload: payload.to_vec(),
            routing_key: String::new(),
            deliveries: 0,
        });
        Ok(())
    }

    async fn ping(&self) -> Result<(), BusError> {
        Ok(())
    }

    async fn teardown(&self, _topology: &Topology) -> Result<(), BusError> {
        let mut inner = self.inner.lock().expect("bus lock");
        inner.queues.clear();
        inner.bindings.clear();
        Ok(())
    }

    async fn depth(&self, worker: &str, dead_letters: bool) -> Result<u32, BusError> {
        let (q, _) = self.queue(worker)?;
        let n = if dead_letters {
            q.dead.lock().expect("dead-letter lock").len()
        } else {
            q.items.lock().expect("queue lock").len()
        };
        Ok(n as u32)
    }
}

struct MemorySubscription {
    queue: Arc<Queue>,
    limit: u32,
}

impl Drop for MemorySubscription {
    fn drop(&mut self) {
        self.queue.consumers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        loop {
            let notified = self.queue.notify.notified();
            let popped = self.queue.items.lock().expect("queue lock").pop_front();
            if let Some(mut m) = popped {
                m.deliveries += 1;
                if m.deliveries > self.limit {
                    // the broker's delivery limit: dead-letter instead of delivering again
                    self.queue.dead.lock().expect("dead-letter lock").push(m);
                    continue;
                }
                let settler = MemorySettle {
                    queue: self.queue.clone(),
                    message: m.clone(),
                    settled: AtomicBool::new(false),
                };
                return Some(Ok(Delivery::new(
                    m.payload,
                    m.routing_key,
                    m.deliveries > 1,
                    Box::new(settler),
                )));
            }
            notified.await;
        }
    }
}

struct MemorySettle {
    queue: Arc<Queue>,
    message: Message,
    settled: AtomicBool,
}

impl MemorySettle {
    fn give_back(&self) {
        let mut items = self.queue.items.lock().expect("queue lock");
        items.push_front(self.message.clone());
        drop(items);
        self.queue.notify.notify_one();
    }
}

#[async_trait]
impl Settle for MemorySettle {
    async fn ack(&self) -> Result<(), BusError> {
        self.settled.store(true, Ordering::SeqCst);
        Ok(())
    }

    async fn requeue(&self) -> Result<(), BusError> {
        if !self.settled.swap(true, Ordering::SeqCst) {
            self.give_back();
        }
        Ok(())
    }
}

impl Drop for MemorySettle {
    fn drop(&mut self) {
        if !self.settled.swap(true, Ordering::SeqCst) {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkerQueue;

    fn topology(limit: u32) -> Topology {
        Topology {
            prefix: String::new(),
            workers: vec![
                WorkerQueue {
                    worker: "a".into(),
                    bindings: vec!["case.*".into()],
                    ..Default::default()
                },
                WorkerQueue {
                    worker: "b".into(),
                    bindings: vec!["case.accepted".into()],
                    ..Default::default()
                },
            ],
            delivery_limit: limit,
            ..Default::default()
        }
    }

    fn msg(key: &str) -> Outgoing {
        Outgoing {
            routing_key: key.into(),
            message_id: "m".into(),
            payload: key.as_bytes().to_vec(),
            traceparent: None,
        }
    }

    #[tokio::test]
    async fn routes_by_topic_and_redelivers_what_was_not_acked() {
        let bus = MemoryBus::new();
        bus.declare(&topology(5)).await.unwrap();
        bus.publish(&[msg("case.accepted"), msg("case.rejected")])
            .await
            .unwrap();
        assert_eq!(bus.depth("a", false).await.unwrap(), 2);
        assert_eq!(bus.depth("b", false).await.unwrap(), 1);
        let mut sub = bus.subscribe("a", 1).await.unwrap();
        let d = sub.next().await.unwrap().unwrap();
        assert_eq!(d.routing_key, "case.accepted");
        assert!(!d.redelivered);
        drop(d); // a crash: the delivery comes back, marked redelivered
        let again = sub.next().await.unwrap().unwrap();
        assert_eq!(again.routing_key, "case.accepted");
        assert!(again.redelivered);
        again.ack().await.unwrap();
        let second = sub.next().await.unwrap().unwrap();
        assert_eq!(second.routing_key, "case.rejected");
        second.ack().await.unwrap();
        assert_eq!(bus.depth("a", false).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn the_delivery_limit_dead_letters_a_poison_message() {
        let bus = MemoryBus::new();
        bus.declare(&topology(2)).await.unwrap();
        bus.publish(&[msg("case.accepted")]).await.unwrap();
        let mut sub = bus.subscribe("b", 1).await.unwrap();
        for _ in 0..2 {
            sub.next().await.unwrap().unwrap().requeue().await.unwrap();
        }
        bus.publish(&[msg("case.accepted")]).await.unwrap();
        let d = sub.next().await.unwrap().unwrap(); // the new one; the poison one went to dead letters
        assert!(!d.redelivered);
        d.ack().await.unwrap();
        assert_eq!(bus.depth("b", true).await.unwrap(), 1);
    }
}
