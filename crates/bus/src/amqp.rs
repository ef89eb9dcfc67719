//! The RabbitMQ backend (lapin).
//!
//! Every AMQP option below carries its reason. The connection is made lazily and remade after a
//! failure: a publish or subscribe that meets a closed connection reports
//! [`BusError::Unavailable`], drops the connection, and the next call (retried with backoff by the
//! caller) connects again — so a broker restart needs no operator.

use crate::{
    Bus, BusError, DeadLetterNote, Delivery, Outgoing, QueueStats, Settle, Subscription, Topology,
};
use async_trait::async_trait;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connect, Connection, ConnectionProperties, ExchangeKind};
use std::sync::Arc;
use tokio::sync::Mutex;

fn unavailable(e: lapin::Error) -> BusError {
    BusError::Unavailable(e.to_string())
}

/// The largest AMQP frame this client proposes when the URL names none (`?frame_max=`).
///
/// lapin keeps a send and a receive buffer of 32 frames each for a connection, filled with zeros
/// when the connection is tuned: at RabbitMQ's default of 128 KiB that is 8 MiB resident in every
/// worker process, a third of its memory. An event is about half a kilobyte and an application a
/// few, so 16 KiB frames carry every message we publish in one body frame (a larger one is split
/// into several, as AMQP does for any body) with 1 MiB of buffers.
pub const FRAME_MAX: u32 = 16 * 1024;

/// `url` parsed, with [`FRAME_MAX`] proposed unless the URL sets `frame_max` itself; the
/// negotiated size is the smaller of this and the broker's.
pub fn connection_uri(url: &str) -> Result<lapin::uri::AMQPUri, BusError> {
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e| BusError::Config(format!("the broker URL: {e}")))?;
    if uri.query.frame_max.is_none() {
        uri.query.frame_max = Some(FRAME_MAX);
    }
    Ok(uri)
}

struct Live {
    connection: Arc<Connection>,
    /// One channel in confirm mode for every publish of this process; lapin matches confirms to
    /// publishes by delivery tag, so concurrent publishers can share it.
    publisher: Channel,
}

/// The RabbitMQ bus.
pub struct AmqpBus {
    url: String,
    topology: Topology,
    /// PEM certificates trusted for `amqps://` besides the system's roots (a private CA).
    ca_pem: Option<String>,
    live: Mutex<Option<Live>>,
}

impl AmqpBus {
    /// A bus on `url` (`amqp://user:pass@host:5672/vhost` or `amqps://…`) with `topology`.
    /// Nothing connects until first use.
    pub fn new(url: &str, topology: Topology) -> AmqpBus {
        AmqpBus {
            url: url.to_owned(),
            topology,
            ca_pem: None,
            live: Mutex::new(None),
        }
    }

    /// Trusts the PEM certificates in `ca_pem` (a private CA) when verifying an `amqps://`
    /// broker, in addition to the system's roots. The broker's name is always verified.
    pub fn with_ca_pem(mut self, ca_pem: String) -> AmqpBus {
        self.ca_pem = Some(ca_pem);
        self
    }

    async fn live(&self) -> Result<(Arc<Connection>, Channel), BusError> {
        let mut live = self.live.lock().await;
        if let Some(l) = live.as_ref() {
            if l.connection.status().connected() && l.publisher.status().connected() {
                return Ok((l.connection.clone(), l.publisher.clone()));
            }
            *live = None;
        }
        let props = ConnectionProperties::default().with_connection_name("wangban".into());
        let tls = lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain: self.ca_pem.clone(),
        };
        let rt = lapin::runtime::default_runtime().map_err(unavailable)?;
        let uri = connection_uri(&self.url)?;
        let connection = Arc::new(
            uri.connect_with_config(props, tls, rt)
                .await
                .map_err(unavailable)?,
        );
        let publisher = connection.create_channel().await.map_err(unavailable)?;
        // Publisher confirms: a publish counts only once the broker has it (quorum queues confirm
        // after a majority of replicas wrote it).
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(unavailable)?;
        *live = Some(Live {
            connection: connection.clone(),
            publisher: publisher.clone(),
        });
        Ok((connection, publisher))
    }

    async fn forget(&self) {
        *self.live.lock().await = None;
    }

    async fn declare_on(&self, ch: &Channel, t: &Topology) -> Result<(), lapin::Error> {
        // durable: the exchanges survive a broker restart.
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            t.exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        ch.exchange_declare(
            t.dead_letter_exchange().into(),
            ExchangeKind::Direct,
            durable,
            FieldTable::default(),
        )
        .await?;
        // Quorum queues must be durable; they replicate across a cluster and count deliveries.
        let queue_options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for w in &t.workers {
            let mut args = FieldTable::default();
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            // A rejected or over-delivered message goes to this worker's dead-letter queue.
            args.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(t.dead_letter_exchange().into()),
            );
            args.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(w.worker.clone().into()),
            );
            // Poison-message guard: after this many deliveries the broker dead-letters it.
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(t.delivery_limit as i32),
            );
            ch.queue_declare(t.queue(&w.worker).into(), queue_options, args)
                .await?;
            let mut dlq_args = FieldTable::default();
            dlq_args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString("quorum".into()),
            );
            ch.queue_declare(
                t.dead_letter_queue(&w.worker).into(),
                queue_options,
                dlq_args,
            )
            .await?;
            for key in &t.bindings_of(w) {
                ch.queue_bind(
                    t.queue(&w.worker).into(),
                    t.exchange().into(),
                    key.as_str().into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
            ch.queue_bind(
                t.dead_letter_queue(&w.worker).into(),
                t.dead_letter_exchange().into(),
                w.worker.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    /// Publishes `items` with confirms; `mandatory`: a message no queue is bound to take is an
    /// error, not silently dropped.
    async fn publish_confirmed(
        &self,
        exchange: &str,
        items: &[(&str, &[u8], BasicProperties)],
        mandatory: bool,
    ) -> Result<(), BusError> {
        let (_, ch) = self.live().await?;
        let mut confirms = Vec::with_capacity(items.len());
        for (key, payload, props) in items {
            match ch
                .basic_publish(
                    exchange.into(),
                    (*key).into(),
                    BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    payload,
                    props.clone(),
                )
                .await
            {
                Ok(c) => confirms.push(c),
                Err(e) => {
                    self.forget().await;
                    return Err(unavailable(e));
                }
            }
        }
        // Pipelined: every message is on the wire before we wait for the first confirm.
        for c in confirms {
            match c.await {
                Ok(conf) if conf.is_ack() => {
                    if let Some(returned) = conf.take_message() {
                        return Err(BusError::Nacked(format!(
                            "no queue took the message ({})",
                            returned.reply_text
                        )));
                    }
                }
                Ok(_) => return Err(BusError::Nacked("negative publisher confirm".into())),
                Err(e) => {
                    self.forget().await;
                    return Err(unavailable(e));
                }
            }
        }
        Ok(())
    }
}

fn properties(message_id: Option<&str>) -> BasicProperties {
    let props = BasicProperties::default()
        // delivery_mode 2: persistent, so a broker restart keeps the message.
        .with_delivery_mode(2)
        .with_content_type("application/cloudevents+json".into());
    match message_id {
        Some(id) => props.with_message_id(id.into()),
        None => props,
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn declare(&self, topology: &Topology) -> Result<(), BusError> {
        let (connection, _) = self.live().await?;
        let ch = connection.create_channel().await.map_err(unavailable)?;
        let result = self.declare_on(&ch, topology).await;
        let _ = ch.close(200, "declared".into()).await;
        result.map_err(|e| match e {
            lapin::Error { .. } if e.to_string().contains("PRECONDITION_FAILED") => {
                BusError::Config(e.to_string())
            }
            e => unavailable(e),
        })
    }

    async fn publish(&self, messages: &[Outgoing]) -> Result<(), BusError> {
        let items: Vec<(&str, &[u8], BasicProperties)> = messages
            .iter()
            .map(|m| {
                (
                    m.routing_key.as_str(),
                    m.payload.as_slice(),
                    match &m.traceparent {
                        Some(tp) => {
                            let mut headers = FieldTable::default();
                            headers.insert(
                                "traceparent".into(),
                                AMQPValue::LongString(tp.as_str().into()),
                            );
                            properties(Some(&m.message_id)).with_headers(headers)
                        }
                        None => properties(Some(&m.message_id)),
                    },
                )
            })
            .collect();
        self.publish_confirmed(&self.topology.exchange(), &items, false)
            .await
    }

    async fn dead_letter(
        &self,
        worker: &str,
        payload: &[u8],
        note: DeadLetterNote<'_>,
    ) -> Result<(), BusError> {
        let mut headers = FieldTable::default();
        headers.insert(
            "x-wangban-reason".into(),
            AMQPValue::LongString(note.reason.into()),
        );
        headers.insert(
            "x-wangban-worker".into(),
            AMQPValue::LongString(worker.into()),
        );
        if let Some(t) = note.event_type {
            headers.insert(
                "x-wangban-event-type".into(),
                AMQPValue::LongString(t.into()),
            );
        }
        let props = properties(note.event_id).with_headers(headers);
        self.publish_confirmed(
            &self.topology.dead_letter_exchange(),
            &[(worker, payload, props)],
            true,
        )
        .await
    }

    async fn subscribe(
        &self,
        worker: &str,
        prefetch: u16,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let (connection, _) = self.live().await?;
        let result = async {
            let ch = connection.create_channel().await?;
            // Prefetch bounds the unacknowledged deliveries in flight to this consumer.
            ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
            let consumer = ch
                .basic_consume(
                    self.topology.queue(worker).into(),
                    format!("wangban-{worker}").into(),
                    // no_ack false: manual acks, a message leaves the queue only once handled.
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            Ok::<_, lapin::Error>((ch, consumer))
        }
        .await;
        match result {
            Ok((channel, consumer)) => Ok(Box::new(AmqpSubscription { channel, consumer })),
            Err(e) => {
                self.forget().await;
                Err(unavailable(e))
            }
        }
    }

    async fn ping(&self) -> Result<(), BusError> {
        self.live().await.map(drop)
    }

    async fn teardown(&self, t: &Topology) -> Result<(), BusError> {
        let (connection, _) = self.live().await?;
        let ch = connection.create_channel().await.map_err(unavailable)?;
        for w in &t.workers {
            for q in [t.queue(&w.worker), t.dead_letter_queue(&w.worker)] {
                ch.queue_delete(q.into(), QueueDeleteOptions::default())
                    .await
                    .map_err(unavailable)?;
            }
        }
        for x in [t.exchange(), t.dead_letter_exchange()] {
            ch.exchange_delete(x.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(unavailable)?;
        }
        let _ = ch.close(200, "teardown".into()).await;
        Ok(())
    }

    async fn stats(&self, worker: &str) -> Result<QueueStats, BusError> {
        let (connection, _) = self.live().await?;
        let ch = connection.create_channel().await.map_err(unavailable)?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        let q = ch
            .queue_declare(
                self.topology.queue(worker).into(),
                passive,
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        let d = ch
            .queue_declare(
                self.topology.dead_letter_queue(worker).into(),
                passive,
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        let _ = ch.close(200, "stats".into()).await;
        Ok(QueueStats {
            ready: q.message_count(),
            consumers: q.consumer_count(),
            dead_letters: d.message_count(),
        })
    }

    async fn send_to_queue(&self, worker: &str, payload: &[u8]) -> Result<(), BusError> {
        // Only this worker's queue is bound to its requeue key (no user needs the default
        // exchange, which routes to any queue by name).
        let key = self.topology.requeue_key(worker);
        self.publish_confirmed(
            &self.topology.exchange(),
            &[(key.as_str(), payload, properties(None))],
            true,
        )
        .await
    }

    async fn depth(&self, worker: &str, dead_letters: bool) -> Result<u32, BusError> {
        let (connection, _) = self.live().await?;
        let ch = connection.create_channel().await.map_err(unavailable)?;
        let name = if dead_letters {
            self.topology.dead_letter_queue(worker)
        } else {
            self.topology.queue(worker)
        };
        // passive: only ask; never create or change the queue.
        let q = ch
            .queue_declare(
                name.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(unavailable)?;
        let _ = ch.close(200, "depth".into()).await;
        Ok(q.message_count())
    }
}

struct AmqpSubscription {
    channel: Channel,
    consumer: lapin::Consumer,
}

#[async_trait]
impl Subscription for AmqpSubscription {
    async fn next(&mut self) -> Option<Result<Delivery, BusError>> {
        match self.consumer.next().await? {
            Ok(d) => {
                let settler = AmqpSettle { acker: d.acker };
                Some(Ok(Delivery::new(
                    d.data,
                    d.routing_key.to_string(),
                    d.redelivered,
                    Box::new(settler),
                )))
            }
            Err(e) => Some(Err(unavailable(e))),
        }
    }
}

impl Drop for AmqpSubscription {
    fn drop(&mut self) {
        // Closing the channel returns its unacknowledged deliveries to the queue.
        let channel = self.channel.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = channel.close(200, "subscription dropped".into()).await;
            });
        }
    }
}

struct AmqpSettle {
    acker: lapin::Acker,
}

#[async_trait]
impl Settle for AmqpSettle {
    async fn ack(&self) -> Result<(), BusError> {
        self.acker
            .ack(BasicAckOptions::default())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn requeue(&self) -> Result<(), BusError> {
        // requeue: true — back to the queue; the quorum queue counts it toward the delivery limit.
        self.acker
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .map(drop)
            .map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_s_own_frame_size_wins_over_ours() {
        let ours = connection_uri("amqp://u:p@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(ours.query.frame_max, Some(FRAME_MAX));
        let theirs = connection_uri("amqp://u:p@127.0.0.1:5672/%2f?frame_max=131072").unwrap();
        assert_eq!(theirs.query.frame_max, Some(131072));
        let err = connection_uri("http://127.0.0.1/").unwrap_err();
        assert!(err.to_string().contains("the broker URL"), "{err}");
    }
}
