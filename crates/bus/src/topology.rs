//! The topology every backend declares: one topic exchange of events, one dead-letter exchange,
//! and per worker a queue (bound to the routing keys it handles) and a dead-letter queue.
//! A prefix keeps tests (and tenants) apart on one broker.

use serde_json::{Value, json};
use std::collections::BTreeMap;

/// A worker's queue, the routing-key patterns bound to it, and the routing keys its process
/// publishes (what its broker user may publish: [`Topology::rabbitmq_definitions`]).
#[derive(Clone, Debug, Default)]
pub struct WorkerQueue {
    pub worker: String,
    pub bindings: Vec<String>,
    pub publishes: Vec<String>,
}

/// The whole topology.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub prefix: String,
    pub workers: Vec<WorkerQueue>,
    /// Deliveries of one message before the broker dead-letters it (poison-message guard).
    pub delivery_limit: u32,
    /// The routing keys the HTTP surface publishes (parties' reports, desks' decisions,
    /// operators' corrections): all the `wangban-ops` user may publish besides replays.
    pub http_publishes: Vec<String>,
    /// The routing keys the portal publishes (the `wangban-portal` user).
    pub portal_publishes: Vec<String>,
}

impl Topology {
    /// The events exchange.
    pub fn exchange(&self) -> String {
        format!("{}wangban.events", self.prefix)
    }

    /// The dead-letter exchange.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}wangban.dead-letters", self.prefix)
    }

    /// A worker's queue.
    pub fn queue(&self, worker: &str) -> String {
        format!("{}wangban.{worker}", self.prefix)
    }

    /// A worker's dead-letter queue.
    pub fn dead_letter_queue(&self, worker: &str) -> String {
        format!("{}wangban.{worker}.dead-letters", self.prefix)
    }

    /// The same exchanges with only the queues of `workers` (a worker whose broker user may
    /// configure only its own queues declares this; the rest comes from the definitions file).
    pub fn only(&self, workers: &[&str]) -> Topology {
        Topology {
            prefix: self.prefix.clone(),
            workers: self
                .workers
                .iter()
                .filter(|w| workers.contains(&w.worker.as_str()))
                .cloned()
                .collect(),
            delivery_limit: self.delivery_limit,
            http_publishes: self.http_publishes.clone(),
            portal_publishes: self.portal_publishes.clone(),
        }
    }

    /// The routing key that reaches only `worker`'s queue: a message put back behind what it
    /// follows, or a replayed dead letter, goes through the events exchange under this key, so
    /// no broker user needs the default exchange (which would reach every queue by name).
    pub fn requeue_key(&self, worker: &str) -> String {
        format!("requeue.{worker}")
    }

    /// Every routing key bound to `worker`'s queue on the events exchange: its bindings and its
    /// [`Topology::requeue_key`].
    pub fn bindings_of(&self, w: &WorkerQueue) -> Vec<String> {
        let mut keys = w.bindings.clone();
        keys.push(self.requeue_key(&w.worker));
        keys
    }

    /// The broker permissions of a worker's own user: its queues and the two exchanges.
    pub fn worker_permissions(&self, worker: &str) -> String {
        let p = regex_escape(&self.prefix);
        let w = regex_escape(worker);
        format!("^{p}wangban\\.(events|dead-letters|{w}|{w}\\.dead-letters)$")
    }

    /// The broker users of a deployment: one per worker (`wangban-<worker>`), limited to its own
    /// queues and to publishing the events it emits; `wangban-ops`, the HTTP surface (parties'
    /// reports, the desks, replays, monitoring); `wangban-portal`, which only hands over
    /// applications.
    pub fn broker_users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .workers
            .iter()
            .map(|w| format!("wangban-{}", w.worker))
            .collect();
        users.push("wangban-ops".into());
        users.push("wangban-portal".into());
        users
    }

    /// The topology as a RabbitMQ definitions file (`rabbitmqctl import_definitions`, or
    /// `load_definitions` at boot), with the same names and arguments the workers declare at
    /// start. With `users` (each of [`Topology::broker_users`] with its `password_hash`, see
    /// [`password_hash`]), the file also creates the users and their permissions; without, it
    /// holds no users at all, so importing it never resets a password.
    pub fn rabbitmq_definitions(&self, users: Option<&BTreeMap<String, String>>) -> Value {
        let vhost = "/";
        let mut queues = Vec::new();
        let mut bindings = Vec::new();
        for w in &self.workers {
            queues.push(json!({
                "name": self.queue(&w.worker), "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": {
                    "x-queue-type": "quorum",
                    "x-dead-letter-exchange": self.dead_letter_exchange(),
                    "x-dead-letter-routing-key": w.worker,
                    "x-delivery-limit": self.delivery_limit
                }
            }));
            queues.push(json!({
                "name": self.dead_letter_queue(&w.worker), "vhost": vhost, "durable": true, "auto_delete": false,
                "arguments": { "x-queue-type": "quorum" }
            }));
            for key in &self.bindings_of(w) {
                bindings.push(json!({
                    "source": self.exchange(), "vhost": vhost, "destination": self.queue(&w.worker),
                    "destination_type": "queue", "routing_key": key, "arguments": {}
                }));
            }
            bindings.push(json!({
                "source": self.dead_letter_exchange(), "vhost": vhost, "destination": self.dead_letter_queue(&w.worker),
                "destination_type": "queue", "routing_key": w.worker, "arguments": {}
            }));
        }
        // One user per worker, with only what it needs, one for the HTTP surface and operators,
        // one for the portal. Topic permissions limit what each may publish on (and bind from)
        // the events exchange to its own routing keys.
        let mut users_out = Vec::new();
        let mut permissions = Vec::new();
        let mut topic_permissions = Vec::new();
        if let Some(hashes) = users {
            let p = regex_escape(&self.prefix);
            let all = format!("^{p}wangban\\..*");
            let exchanges = format!("^{p}wangban\\.(events|dead-letters)$");
            for name in self.broker_users() {
                let (tags, configure, write, read, publish, bind) =
                    match name.strip_prefix("wangban-") {
                        Some("ops") => (
                            json!(["monitoring"]),
                            all.clone(),
                            all.clone(),
                            all.clone(),
                            // replays reach a worker's queue through its requeue key
                            self.http_publishes
                                .iter()
                                .map(|k| regex_escape(k))
                                .chain([format!("{}\\..+", regex_escape("requeue"))])
                                .collect::<Vec<_>>(),
                            vec![".*".to_owned()],
                        ),
                        Some("portal") => (
                            json!([]),
                            exchanges.clone(),
                            format!("^{p}wangban\\.events$"),
                            "^$".to_owned(),
                            self.portal_publishes
                                .iter()
                                .map(|k| regex_escape(k))
                                .collect(),
                            vec![],
                        ),
                        Some(worker) => {
                            let Some(w) = self.workers.iter().find(|w| w.worker == worker) else {
                                continue;
                            };
                            let perm = self.worker_permissions(worker);
                            let mut publish: Vec<String> =
                                w.publishes.iter().map(|k| regex_escape(k)).collect();
                            publish.push(regex_escape(&self.requeue_key(worker)));
                            let bind = self
                                .bindings_of(w)
                                .iter()
                                .map(|k| regex_escape(k))
                                .collect();
                            (json!([]), perm.clone(), perm.clone(), perm, publish, bind)
                        }
                        None => continue,
                    };
                let hash = hashes.get(&name).cloned().unwrap_or_default();
                users_out.push(json!({"name": name, "password_hash": hash,
                                      "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": tags}));
                permissions.push(json!({"user": name, "vhost": vhost, "configure": configure,
                                        "write": write, "read": read}));
                topic_permissions.push(
                    json!({"user": name, "vhost": vhost, "exchange": self.exchange(),
                                              "write": any_of(&publish), "read": any_of(&bind)}),
                );
            }
        }
        json!({
            "rabbit_version": "3.12",
            "users": users_out,
            "permissions": permissions,
            "topic_permissions": topic_permissions,
            "vhosts": [{"name": vhost}],
            "exchanges": [
                {"name": self.exchange(), "vhost": vhost, "type": "topic", "durable": true, "auto_delete": false, "internal": false, "arguments": {}},
                {"name": self.dead_letter_exchange(), "vhost": vhost, "type": "direct", "durable": true, "auto_delete": false, "internal": false, "arguments": {}}
            ],
            "queues": queues,
            "bindings": bindings
        })
    }
}

/// RabbitMQ's `rabbit_password_hashing_sha256` hash of `password`: base64 of the 4-byte `salt`
/// followed by SHA-256(salt ‖ password), what `rabbitmqctl hash_password` prints for a random salt.
pub fn password_hash(password: &str, salt: [u8; 4]) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut bytes = salt.to_vec();
    bytes.extend_from_slice(
        &Sha256::new()
            .chain_update(salt)
            .chain_update(password)
            .finalize(),
    );
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A regular expression matching exactly one of `alternatives` (each already a regex), or
/// nothing when there are none.
fn any_of(alternatives: &[String]) -> String {
    if alternatives.is_empty() {
        "^$".to_owned()
    } else {
        format!("^({})$", alternatives.join("|"))
    }
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

/// AMQP topic matching: words separated by `.`, `*` matches one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match (p.first(), k.first()) {
            (None, None) => true,
            (Some(&"#"), _) => go(&p[1..], k) || (!k.is_empty() && go(p, &k[1..])),
            (Some(&"*"), Some(_)) => go(&p[1..], &k[1..]),
            (Some(pw), Some(kw)) if pw == kw => go(&p[1..], &k[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    go(&p, &k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_rows() {
        let rows = [
            ("case.accepted", "case.accepted", true),
            ("case.*", "case.accepted", true),
            ("case.*", "case.accepted.x", false),
            ("case.#", "case", true),
            ("case.#", "case.a.b", true),
            ("#", "anything.at.all", true),
            ("*.reported", "payment.reported", true),
            ("*.reported", "reported", false),
            ("case.accepted", "case.rejected", false),
        ];
        for (p, k, want) in rows {
            assert_eq!(topic_matches(p, k), want, "{p} vs {k}");
        }
    }

    #[test]
    fn definitions_name_quorum_queues_with_dead_lettering() {
        let t = Topology {
            prefix: String::new(),
            workers: vec![WorkerQueue {
                worker: "intake".into(),
                bindings: vec!["application.submitted".into()],
                publishes: vec!["case.accepted".into(), "case.rejected".into()],
            }],
            delivery_limit: 5,
            http_publishes: vec!["payment.reported".into()],
            portal_publishes: vec!["application.submitted".into()],
        };
        let d = t.rabbitmq_definitions(None);
        assert_eq!(d["users"], json!([]), "the template resets no password");
        assert_eq!(d["permissions"], json!([]));
        assert_eq!(d["queues"][0]["name"], "wangban.intake");
        assert_eq!(d["queues"][0]["arguments"]["x-queue-type"], "quorum");
        assert_eq!(
            d["queues"][0]["arguments"]["x-dead-letter-exchange"],
            "wangban.dead-letters"
        );
        assert_eq!(d["queues"][1]["name"], "wangban.intake.dead-letters");
        assert_eq!(d["bindings"][0]["routing_key"], "application.submitted");
        let hashes: BTreeMap<String, String> = t
            .broker_users()
            .into_iter()
            .map(|u| (u.clone(), password_hash(&u, [1, 2, 3, 4])))
            .collect();
        let d = t.rabbitmq_definitions(Some(&hashes));
        let users: Vec<&str> = d["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["name"].as_str().unwrap())
            .collect();
        assert_eq!(users, ["wangban-intake", "wangban-ops", "wangban-portal"]);
        assert_eq!(d["users"][0]["password_hash"], hashes["wangban-intake"]);
        assert_eq!(d["users"][1]["tags"], json!(["monitoring"]));
        assert_eq!(
            d["permissions"][0]["configure"],
            "^wangban\\.(events|dead-letters|intake|intake\\.dead-letters)$"
        );
        let topic = |user: &str| {
            d["topic_permissions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["user"] == user)
                .unwrap()
                .clone()
        };
        assert_eq!(topic("wangban-intake")["exchange"], "wangban.events");
        assert_eq!(
            topic("wangban-intake")["write"],
            "^(case\\.accepted|case\\.rejected|requeue\\.intake)$"
        );
        assert_eq!(
            topic("wangban-intake")["read"],
            "^(application\\.submitted|requeue\\.intake)$"
        );
        assert_eq!(
            topic("wangban-ops")["write"],
            "^(payment\\.reported|requeue\\..+)$"
        );
        assert_eq!(
            topic("wangban-portal")["write"],
            "^(application\\.submitted)$"
        );
        assert_eq!(topic("wangban-portal")["read"], "^$");
    }

    #[test]
    fn password_hashes_are_rabbitmqs_salted_sha256() {
        // `rabbitmqctl hash_password secret` with the salt 01020304, computed independently:
        // printf '\x01\x02\x03\x04secret' | sha256sum, the salt prepended, base64.
        assert_eq!(
            password_hash("secret", [1, 2, 3, 4]),
            "AQIDBDB9kM21iEUzN1lZ+6VReCsdNqS0sERdAQTcY6Xs3PMz"
        );
        assert_ne!(
            password_hash("secret", [1, 2, 3, 5]),
            password_hash("secret", [1, 2, 3, 4])
        );
    }
}
