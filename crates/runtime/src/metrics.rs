//! Counters and histograms of one process, rendered in the Prometheus text format. Labels are
//! worker names, event types and outcomes — never anything about an applicant.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the handling-latency histogram.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

#[derive(Default, Clone)]
struct Histogram {
    counts: [u64; LATENCY_BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    consumed: BTreeMap<(String, String, &'static str), u64>,
    published: BTreeMap<(&'static str, String), u64>,
    retried: BTreeMap<(String, String), u64>,
    callbacks: BTreeMap<(String, &'static str), u64>,
    latency: BTreeMap<String, Histogram>,
    effects: BTreeMap<(String, &'static str), u64>,
    effect_latency: BTreeMap<String, Histogram>,
    /// Per worker: (transactions that committed deliveries, deliveries they committed).
    transactions: BTreeMap<String, (u64, u64)>,
    /// Per party: (transactions that recorded answers, answers they recorded).
    answer_transactions: BTreeMap<String, (u64, u64)>,
    /// Per worker: timer passes completed (`Handler::tick` returned, well or not).
    ticks: BTreeMap<String, u64>,
}

/// One transaction of `key` that committed `items`, in a `(transactions, items)` counter pair.
fn one_batch(counts: &mut BTreeMap<String, (u64, u64)>, key: &str, items: u64) {
    let t = counts.entry(key.into()).or_default();
    t.0 += 1;
    t.1 += items;
}

/// Renders a `(transactions, items)` counter pair as two counters labelled by `label`.
fn batch_counters(
    out: &mut String,
    label: &str,
    counts: &BTreeMap<String, (u64, u64)>,
    transactions: (&str, &str),
    items: (&str, &str),
) {
    for (i, (name, help)) in [transactions, items].into_iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (key, pair) in counts {
            let n = if i == 0 { pair.0 } else { pair.1 };
            let _ = writeln!(out, "{name}{{{label}=\"{key}\"}} {n}");
        }
    }
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, label: &str, value: &str) {
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{label}=\"{value}\",le=\"{bound}\"}} {}",
                self.counts[i]
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {}", self.count);
    }
}

/// The process's metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// A delivery to `worker` of `event_type` ended with `outcome` after `took`.
    pub fn consumed(&self, worker: &str, event_type: &str, outcome: &'static str, took: Duration) {
        let mut m = self.inner.lock().expect("metrics lock");
        *m.consumed
            .entry((worker.into(), event_type.into(), outcome))
            .or_default() += 1;
        m.latency.entry(worker.into()).or_default().observe(took);
    }

    /// An attempt of `party` at an effect ended with `outcome` (`done`, `refused`, `retried`,
    /// `dead`) after a call of `took`.
    pub fn effect(&self, party: &str, outcome: &'static str, took: Duration) {
        let mut m = self.inner.lock().expect("metrics lock");
        *m.effects.entry((party.into(), outcome)).or_default() += 1;
        m.effect_latency
            .entry(party.into())
            .or_default()
            .observe(took);
    }

    /// `n` events of `event_type` published by `path` (`relay` or `ingress`).
    pub fn published(&self, path: &'static str, event_type: &str, n: u64) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .published
            .entry((path, event_type.into()))
            .or_default() += n;
    }

    /// A transaction of `worker` committed `deliveries` deliveries (more than one: a batch).
    pub fn committed(&self, worker: &str, deliveries: u64) {
        let mut m = self.inner.lock().expect("metrics lock");
        one_batch(&mut m.transactions, worker, deliveries);
    }

    /// A transaction of `party`'s executor recorded `answers` of its answers.
    pub fn answers_recorded(&self, party: &str, answers: u64) {
        let mut m = self.inner.lock().expect("metrics lock");
        one_batch(&mut m.answer_transactions, party, answers);
    }

    /// `(transactions, answers)` a party's executor recorded: their ratio is its mean batch.
    pub fn answers_recorded_total(&self, party: &str) -> (u64, u64) {
        let m = self.inner.lock().expect("metrics lock");
        m.answer_transactions
            .get(party)
            .copied()
            .unwrap_or_default()
    }

    /// A timer pass of `worker` completed.
    pub fn ticked(&self, worker: &str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .ticks
            .entry(worker.into())
            .or_default() += 1;
    }

    /// Timer passes `worker` completed: a test waits for passes, never for a time.
    pub fn ticks(&self, worker: &str) -> u64 {
        let m = self.inner.lock().expect("metrics lock");
        m.ticks.get(worker).copied().unwrap_or_default()
    }

    /// `(transactions, deliveries)` a worker committed: their ratio is its mean batch.
    pub fn committed_total(&self, worker: &str) -> (u64, u64) {
        let m = self.inner.lock().expect("metrics lock");
        m.transactions.get(worker).copied().unwrap_or_default()
    }

    /// A transient failure of `worker` on `event_type` was retried.
    pub fn retried(&self, worker: &str, event_type: &str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .retried
            .entry((worker.into(), event_type.into()))
            .or_default() += 1;
    }

    /// A callback of `party` (a configured party's name) ended with `outcome`.
    pub fn callback(&self, party: &str, outcome: &'static str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .callbacks
            .entry((party.into(), outcome))
            .or_default() += 1;
    }

    /// Deliveries of `worker` that ended with `outcome` (all event types).
    pub fn consumed_total(&self, worker: &str, outcome: &str) -> u64 {
        let m = self.inner.lock().expect("metrics lock");
        m.consumed
            .iter()
            .filter(|((w, _, o), _)| w == worker && *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    /// `(deliveries, total handling seconds, p99 upper bound in seconds)` of a worker.
    pub fn worker_summary(&self, worker: &str) -> (u64, f64, f64) {
        let m = self.inner.lock().expect("metrics lock");
        let Some(h) = m.latency.get(worker) else {
            return (0, 0.0, 0.0);
        };
        let target = (h.count as f64 * 0.99).ceil() as u64;
        let p99 = LATENCY_BUCKETS
            .iter()
            .zip(h.counts)
            .find(|(_, c)| *c >= target)
            .map_or(f64::INFINITY, |(b, _)| *b);
        (h.count, h.sum, p99)
    }

    /// Appends the metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let m = self.inner.lock().expect("metrics lock");
        let _ = writeln!(
            out,
            "# HELP wangban_messages_consumed_total Deliveries handled by a worker, by outcome."
        );
        let _ = writeln!(out, "# TYPE wangban_messages_consumed_total counter");
        for ((w, t, o), n) in &m.consumed {
            let _ = writeln!(
                out,
                "wangban_messages_consumed_total{{worker=\"{w}\",event_type=\"{t}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP wangban_messages_dead_lettered_total Deliveries a worker dead-lettered."
        );
        let _ = writeln!(out, "# TYPE wangban_messages_dead_lettered_total counter");
        for ((w, t, o), n) in &m.consumed {
            if *o == "dead_lettered" {
                let _ = writeln!(
                    out,
                    "wangban_messages_dead_lettered_total{{worker=\"{w}\",event_type=\"{t}\"}} {n}"
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP wangban_messages_published_total Events published, by path (relay: the outbox; ingress: from outside)."
        );
        let _ = writeln!(out, "# TYPE wangban_messages_published_total counter");
        for ((p, t), n) in &m.published {
            let _ = writeln!(
                out,
                "wangban_messages_published_total{{path=\"{p}\",event_type=\"{t}\"}} {n}"
            );
        }
        batch_counters(
            out,
            "worker",
            &m.transactions,
            (
                "wangban_transactions_total",
                "Transactions that committed deliveries (WANGBAN_BATCH): deliveries_total / transactions_total is the mean batch.",
            ),
            (
                "wangban_transaction_deliveries_total",
                "Deliveries committed by those transactions.",
            ),
        );
        let _ = writeln!(
            out,
            "# HELP wangban_timer_passes_total Timer passes (WANGBAN_TICK_MS) a worker completed.\n# TYPE wangban_timer_passes_total counter"
        );
        for (w, n) in &m.ticks {
            let _ = writeln!(out, "wangban_timer_passes_total{{worker=\"{w}\"}} {n}");
        }
        batch_counters(
            out,
            "party",
            &m.answer_transactions,
            (
                "wangban_effect_answer_transactions_total",
                "Transactions that recorded parties' answers: effect_answers_recorded_total / this is the mean batch.",
            ),
            (
                "wangban_effect_answers_recorded_total",
                "Parties' answers recorded by those transactions.",
            ),
        );
        let _ = writeln!(
            out,
            "# HELP wangban_messages_retried_total Transient failures retried with backoff."
        );
        let _ = writeln!(out, "# TYPE wangban_messages_retried_total counter");
        for ((w, t), n) in &m.retried {
            let _ = writeln!(
                out,
                "wangban_messages_retried_total{{worker=\"{w}\",event_type=\"{t}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP wangban_callbacks_total Parties' callbacks, by outcome (accepted, refused_signature, refused_body, refused_replay)."
        );
        let _ = writeln!(out, "# TYPE wangban_callbacks_total counter");
        for ((p, o), n) in &m.callbacks {
            let _ = writeln!(
                out,
                "wangban_callbacks_total{{party=\"{p}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP wangban_handle_seconds Time to handle one delivery, from decode to ack."
        );
        let _ = writeln!(out, "# TYPE wangban_handle_seconds histogram");
        for (w, h) in &m.latency {
            h.render(out, "wangban_handle_seconds", "worker", w);
        }
        let _ = writeln!(
            out,
            "# HELP wangban_effects_total Attempts at effects by the parties' executors, by outcome (done, refused, retried, dead)."
        );
        let _ = writeln!(out, "# TYPE wangban_effects_total counter");
        for ((p, o), n) in &m.effects {
            let _ = writeln!(
                out,
                "wangban_effects_total{{party=\"{p}\",outcome=\"{o}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP wangban_effect_call_seconds Time of one call to a party, outside any transaction."
        );
        let _ = writeln!(out, "# TYPE wangban_effect_call_seconds histogram");
        for (p, h) in &m.effect_latency {
            h.render(out, "wangban_effect_call_seconds", "party", p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_buckets() {
        let m = Metrics::default();
        m.consumed(
            "intake",
            "wangban.application.submitted.v1",
            "handled",
            Duration::from_millis(3),
        );
        m.consumed(
            "intake",
            "wangban.application.submitted.v1",
            "dead_lettered",
            Duration::from_millis(30),
        );
        m.published("relay", "case.accepted", 2);
        m.retried("notify", "wangban.payment.reported.v1");
        m.effect("sms", "done", Duration::from_millis(300));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("wangban_messages_consumed_total{worker=\"intake\",event_type=\"wangban.application.submitted.v1\",outcome=\"handled\"} 1"));
        assert!(out.contains("wangban_messages_dead_lettered_total{worker=\"intake\",event_type=\"wangban.application.submitted.v1\"} 1"));
        assert!(out.contains(
            "wangban_messages_published_total{path=\"relay\",event_type=\"case.accepted\"} 2"
        ));
        assert!(out.contains("wangban_handle_seconds_bucket{worker=\"intake\",le=\"0.005\"} 1"));
        assert!(out.contains("wangban_handle_seconds_bucket{worker=\"intake\",le=\"0.05\"} 2"));
        assert!(out.contains("wangban_handle_seconds_count{worker=\"intake\"} 2"));
        assert!(out.contains("wangban_effects_total{party=\"sms\",outcome=\"done\"} 1"));
        assert!(out.contains("wangban_effect_call_seconds_bucket{party=\"sms\",le=\"0.25\"} 0"));
        assert!(out.contains("wangban_effect_call_seconds_bucket{party=\"sms\",le=\"0.5\"} 1"));
        assert_eq!(m.consumed_total("intake", "handled"), 1);
    }
}
