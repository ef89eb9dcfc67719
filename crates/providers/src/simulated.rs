//! Simulated parties for the demo and tests. They behave like the real ones — idempotency keys
//! honoured, answers arriving through [`Ingress`] — and follow a script read from markers in the
//! application id, so that any process can simulate any case without shared state:
//!
//! | marker in `application_id` | behaviour |
//! |---|---|
//! | `-CORR-` | the reviewer asks for a correction in round 1, approves the resubmission |
//! | `-REVREJ-` | the reviewer rejects |
//! | `-UNPAID-` | the applicant never pays |
//! | `-RETURN-` | the courier brings the document back (refused at the door) |
//! | `-NOCOLLECT-` | nobody comes to the hall for the document |
//! | `-LATE-` | the centre reports the document produced [`LATE_BY`] after it took the order, by the simulation's clock |
//! | (none) | approve, pay, produce, deliver or collect |
//!
//! The simulated SMS gateway refuses, for good, numbers starting with `100` (no such block).
//!
//! A real party keeps the job it accepted when our worker dies. A simulated one lives in the
//! worker's process, so it accepts a job only once its answer is on the bus: a call waits
//! `delay`, publishes the answer (confirmed), and only then returns. If the answer cannot be
//! published the call fails transiently and the answer stays pending under the idempotency key,
//! published again by the retried call. An answer so reaches its consumer before the executor
//! that made the call has recorded it; the consumer retries the early step until the record is
//! there, as it would for a fast real party.

use crate::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wangban_domain::clock::Clock;

/// How a simulated case behaves, from its application id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Script {
    pub correct_first: bool,
    pub review_rejects: bool,
    pub never_pays: bool,
    /// The courier brings the document back (refused at the door).
    pub courier_returns: bool,
    /// Nobody comes to the hall for the document.
    pub never_collects: bool,
    /// The centre finishes the document [`LATE_BY`] after taking the order.
    pub produced_late: bool,
}

/// How long after taking a `-LATE-` order the simulated centre reports it produced: past the
/// 3-working-day promise across any holiday of the calendar. Measured on the simulation's clock,
/// which `wangban demo` moves forward to show the late order; a late answer waits in memory and
/// is lost with the process (the order stays in production, as a centre that never answered).
pub const LATE_BY: Duration = Duration::from_secs(30 * 86_400);

impl Script {
    /// The script of an application id.
    pub fn of(application_id: &str) -> Script {
        Script {
            correct_first: application_id.contains("-CORR-"),
            review_rejects: application_id.contains("-REVREJ-"),
            never_pays: application_id.contains("-UNPAID-"),
            courier_returns: application_id.contains("-RETURN-"),
            never_collects: application_id.contains("-NOCOLLECT-"),
            produced_late: application_id.contains("-LATE-"),
        }
    }
}

/// The order id the simulated payment gateway gives a case's fee (one order per case): known in
/// advance, so a test can hand-make a payment report for it.
pub fn gateway_order_id(case: &CaseId) -> String {
    format!("SIMPAY-{}", case.as_str().trim_start_matches("case_"))
}

/// Faults the simulated parties can be told to show (for fault-injection runs).
#[derive(Clone, Debug, Default)]
pub struct SimFaults {
    /// A file naming, one per line, the parties that are down now (`sms`, `payment`,
    /// `production`, `courier`, `hall`, `review`): they answer every call with a transient error.
    /// Read on every call, so a run can take a party down and bring it back from outside.
    pub outage_file: Option<std::path::PathBuf>,
    /// Every answer (callback) is sent twice, the second late, so answers arrive duplicated and
    /// out of order; couriers also report a stale `in_transit` after `delivered`.
    pub duplicate_answers: bool,
    /// Slow, unreliable parties: each call to one of `parties` takes `latency`, and
    /// `timeout_percent` of them then fail transiently, as a call that timed out (the party may
    /// or may not have acted: the idempotency key settles it on the retry).
    pub slow: Option<SlowParties>,
}

/// See [`SimFaults::slow`].
#[derive(Clone, Debug)]
pub struct SlowParties {
    pub parties: Vec<String>,
    pub latency: Duration,
    pub timeout_percent: u64,
}

impl SlowParties {
    /// `PARTY[,PARTY…]:LATENCY_MS:TIMEOUT_PERCENT`, e.g. `sms,payment:2000:30`.
    pub fn parse(text: &str) -> Result<SlowParties, String> {
        let mut parts = text.split(':');
        let (Some(parties), Some(ms), Some(pct), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("expected PARTY[,PARTY…]:LATENCY_MS:TIMEOUT_PERCENT".into());
        };
        let ms: u64 = ms.parse().map_err(|_| "latency must be milliseconds")?;
        let pct: u64 = pct
            .parse()
            .map_err(|_| "timeout share must be a percentage")?;
        Ok(SlowParties {
            parties: parties.split(',').map(|p| p.trim().to_owned()).collect(),
            latency: Duration::from_millis(ms),
            timeout_percent: pct.min(100),
        })
    }
}

/// What a party said to one idempotency key. A minute of keys is tens of thousands of entries
/// in a long benchmark, all in a worker's process: boxed, an entry and its key take 56 bytes of
/// the table instead of 128.
struct Entry {
    /// The synchronous answer (an order id, a waybill).
    reply: Box<str>,
    /// The asynchronous answer, until it is on the bus.
    pending: Option<Box<Report>>,
    at: Instant,
}

/// An asynchronous answer: an event about a case.
#[derive(Clone)]
struct Report {
    kind: EventType,
    case: CaseId,
    data: Value,
}

impl Report {
    fn new(kind: EventType, case: &CaseId, data: Value) -> Option<Report> {
        Some(Report {
            kind,
            case: case.clone(),
            data,
        })
    }
}

/// Shared by the simulated parties: where answers go, how long they take, what was asked.
#[derive(Clone)]
pub struct Simulation {
    ingress: Arc<dyn Ingress>,
    delay: Duration,
    /// Idempotency keys and the answer given, with when; like a real party's, kept for
    /// `retention` when one is set (long runs), else for the life of the process.
    ledger: Arc<Mutex<HashMap<Box<str>, Entry>>>,
    retention: Option<Duration>,
    counter: Arc<AtomicU64>,
    faults: SimFaults,
    clock: Clock,
}

impl Simulation {
    /// Parties answering through `ingress` after `delay`.
    pub fn new(ingress: Arc<dyn Ingress>, delay: Duration) -> Simulation {
        Simulation {
            ingress,
            delay,
            faults: SimFaults::default(),
            ledger: Default::default(),
            retention: None,
            counter: Default::default(),
            clock: Clock::system(),
        }
    }

    /// The same parties, reading `clock` for the answers they give later (`-LATE-`).
    pub fn with_clock(mut self, clock: Clock) -> Simulation {
        self.clock = clock;
        self
    }

    /// Forget idempotency keys older than `retention` (a real party keeps them for a day or so;
    /// a long benchmark would otherwise hold every key of every case in memory).
    pub fn with_retention(mut self, retention: Option<Duration>) -> Simulation {
        self.retention = retention;
        self
    }

    /// The same parties, showing `faults`.
    pub fn with_faults(mut self, faults: SimFaults) -> Simulation {
        self.faults = faults;
        self
    }

    /// A transient error when `party` is listed in the outage file; for a slow party, its
    /// latency and, for a share of calls, a timeout.
    async fn up(&self, party: &str) -> Result<(), ProviderError> {
        if let Some(slow) = &self.faults.slow
            && slow.parties.iter().any(|p| p == party)
        {
            tokio::time::sleep(slow.latency).await;
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            if (n * 37) % 100 < slow.timeout_percent {
                return Err(ProviderError::Transient(format!(
                    "simulated timeout of {party}"
                )));
            }
        }
        let Some(path) = &self.faults.outage_file else {
            return Ok(());
        };
        match std::fs::read_to_string(path) {
            Ok(text) if text.lines().any(|l| l.trim() == party) => Err(ProviderError::Transient(
                format!("simulated outage of {party}"),
            )),
            _ => Ok(()),
        }
    }

    /// Answers the request `key` once: the first time, `make` gives the reply and the answer to
    /// report; the answer is published before this returns (see the module's documentation), and
    /// a repeated request gets the same reply.
    async fn once(
        &self,
        key: &str,
        make: impl FnOnce(u64) -> (String, Option<Report>),
    ) -> Result<String, ProviderError> {
        // Every call takes the party's time, whether it answers now or later.
        tokio::time::sleep(self.delay).await;
        let (reply, pending) = {
            let mut ledger = self.ledger.lock().expect("ledger lock");
            match ledger.get(key) {
                Some(e) => (e.reply.to_string(), e.pending.as_deref().cloned()),
                None => {
                    let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
                    if let Some(retention) = self.retention
                        && n.is_multiple_of(1024)
                    {
                        ledger.retain(|_, e| e.at.elapsed() < retention);
                    }
                    let (reply, pending) = make(n);
                    let entry = Entry {
                        reply: reply.as_str().into(),
                        pending: pending.clone().map(Box::new),
                        at: Instant::now(),
                    };
                    ledger.insert(key.into(), entry);
                    (reply, pending)
                }
            }
        };
        if let Some(report) = pending {
            self.publish(key, report).await?;
        }
        Ok(reply)
    }

    /// Publishes the pending answer to `key`, then marks it sent.
    async fn publish(&self, key: &str, r: Report) -> Result<(), ProviderError> {
        self.ingress
            .report(r.kind, &r.case, r.data.clone())
            .await
            .map_err(|e| ProviderError::Transient(format!("answer not published: {e}")))?;
        if let Some(e) = self.ledger.lock().expect("ledger lock").get_mut(key) {
            e.pending = None;
        }
        if self.faults.duplicate_answers {
            self.duplicate(r);
        }
        Ok(())
    }

    /// How many distinct requests with keys starting with `prefix` the parties received: what a
    /// real party would have acted on.
    pub fn distinct_requests(&self, prefix: &str) -> usize {
        self.ledger
            .lock()
            .expect("ledger lock")
            .keys()
            .filter(|k| k.starts_with(prefix))
            .count()
    }

    /// Sends a copy of an answer late: after other answers, sometimes after later events of the
    /// case; a courier's `delivered` is also followed by a stale `in_transit`.
    fn duplicate(&self, r: Report) {
        let extra = Duration::from_millis(50 + self.counter.fetch_add(1, Ordering::Relaxed) % 400);
        if r.kind == EventType::CourierReported && r.data["status"] == "delivered" {
            let stale = serde_json::json!({"waybill": r.data["waybill"], "status": "in_transit"});
            self.send_later(r.kind, r.case.clone(), stale, extra * 2);
        }
        self.send_later(r.kind, r.case, r.data, extra);
    }

    fn send_later(&self, kind: EventType, case: CaseId, data: Value, delay: Duration) {
        let due = self.clock.now_ms() + delay.as_millis() as i64;
        self.send_when(kind, case, data, due);
    }

    /// Reports `data` once the simulation's clock reads `due` (ms since the Unix epoch),
    /// retrying while the bus is away.
    fn send_when(&self, kind: EventType, case: CaseId, data: Value, due: i64) {
        let ingress = self.ingress.clone();
        let clock = self.clock.clone();
        tokio::spawn(async move {
            loop {
                let left = due - clock.now_ms();
                if left <= 0 {
                    break;
                }
                // The clock may be moved forward meanwhile: look again at least every 200 ms.
                tokio::time::sleep(Duration::from_millis(left.clamp(1, 200) as u64)).await;
            }
            for attempt in 1..=50u32 {
                match ingress.report(kind, &case, data.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(case = %case, attempt, error = %e, "simulated party could not report; retrying");
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt.min(10))))
                            .await;
                    }
                }
            }
        });
    }

    /// The simulated SMS gateway.
    pub fn sms(&self) -> Arc<dyn SmsGateway> {
        Arc::new(SimSms(self.clone()))
    }
    /// The simulated payment gateway.
    pub fn payment(&self) -> Arc<dyn PaymentGateway> {
        Arc::new(SimPayment(self.clone()))
    }
    /// The simulated card-production centre.
    pub fn production(&self) -> Arc<dyn ProductionCentre> {
        Arc::new(SimProduction(self.clone()))
    }
    /// The simulated courier.
    pub fn courier(&self) -> Arc<dyn Courier> {
        Arc::new(SimCourier(self.clone()))
    }
    /// The simulated pickup hall.
    pub fn hall(&self) -> Arc<dyn PickupHall> {
        Arc::new(SimHall(self.clone()))
    }
    /// The simulated review desk.
    pub fn review_desk(&self) -> Arc<dyn ReviewDesk> {
        Arc::new(SimDesk(self.clone()))
    }
}

struct SimSms(Simulation);
struct SimPayment(Simulation);
struct SimProduction(Simulation);
struct SimCourier(Simulation);
struct SimHall(Simulation);
struct SimDesk(Simulation);

#[async_trait]
impl SmsGateway for SimSms {
    async fn send(&self, m: &SmsMessage) -> Result<SmsReceipt, ProviderError> {
        self.0.up("sms").await?;
        // No mobile number block starts with 100: the gateway refuses such a number for good.
        if m.phone.starts_with("100") {
            return Err(ProviderError::Permanent("invalid mobile number".into()));
        }
        let key = format!("sms:{}", m.idempotency_key);
        let id = self
            .0
            .once(&key, |n| (format!("SIMSMS{n:08}"), None))
            .await?;
        Ok(SmsReceipt { provider_id: id })
    }
}

#[async_trait]
impl PaymentGateway for SimPayment {
    async fn create_order(&self, r: &PaymentRequest) -> Result<PaymentOrder, ProviderError> {
        self.0.up("payment").await?;
        let key = format!("payment:{}", r.idempotency_key);
        let id = self
            .0
            .once(&key, |_| {
                let id = gateway_order_id(&r.case_id);
                let paid = (!Script::of(&r.application_id).never_pays).then(
                    || json!({"payment_id": id, "gateway_order_id": id, "amount_cny": r.amount_cny, "status": "succeeded"}),
                );
                let report =
                    paid.and_then(|d| Report::new(EventType::PaymentReported, &r.case_id, d));
                (id, report)
            })
            .await?;
        Ok(PaymentOrder {
            gateway_order_id: id,
        })
    }
}

#[async_trait]
impl ProductionCentre for SimProduction {
    async fn place_order(&self, o: &ProductionOrder) -> Result<ProductionAck, ProviderError> {
        self.0.up("production").await?;
        let key = format!("production:{}", o.idempotency_key);
        let id = self
            .0
            .once(&key, |n| {
                let id = format!("SIMPRD{n:08}");
                let prefix = if o.document_kind == "passport" {
                    "E"
                } else {
                    "C"
                };
                let number = format!("{prefix}{:08}", n % 100_000_000);
                let data =
                    json!({"centre_order_id": id, "status": "produced", "document_number": number});
                if Script::of(&o.application_id).produced_late {
                    let due = self.0.clock.now_ms() + LATE_BY.as_millis() as i64;
                    let kind = EventType::ProductionReported;
                    self.0.send_when(kind, o.case_id.clone(), data, due);
                    return (id, None);
                }
                (
                    id,
                    Report::new(EventType::ProductionReported, &o.case_id, data),
                )
            })
            .await?;
        Ok(ProductionAck {
            centre_order_id: id,
        })
    }
}

#[async_trait]
impl Courier for SimCourier {
    async fn book(&self, s: &ShipmentRequest) -> Result<Booking, ProviderError> {
        self.0.up("courier").await?;
        let key = format!("shipment:{}", s.idempotency_key);
        let waybill = self
            .0
            .once(&key, |n| {
                let waybill = format!("SF{n:012}");
                let status = if Script::of(&s.application_id).courier_returns {
                    "returned"
                } else {
                    "delivered"
                };
                let data = json!({"waybill": waybill, "status": status});
                (
                    waybill,
                    Report::new(EventType::CourierReported, &s.case_id, data),
                )
            })
            .await?;
        Ok(Booking { waybill })
    }
}

#[async_trait]
impl PickupHall for SimHall {
    async fn announce(&self, n: &PickupNotice) -> Result<PickupSlot, ProviderError> {
        self.0.up("hall").await?;
        let hall = format!("户籍地（{}）公安机关出入境接待大厅", &n.hukou_region);
        let key = format!("pickup:{}", n.idempotency_key);
        let collected = json!({"status": "collected"});
        let report = if Script::of(&n.application_id).never_collects {
            None
        } else {
            Report::new(EventType::PickupReported, &n.case_id, collected)
        };
        let hall = self.0.once(&key, |_| (hall, report)).await?;
        Ok(PickupSlot {
            hall,
            awaiting_arrival: false,
        })
    }
}

#[async_trait]
impl ReviewDesk for SimDesk {
    async fn assign(&self, t: &ReviewTask) -> Result<Assignment, ProviderError> {
        self.0.up("review").await?;
        let reviewer = t.preferred_reviewer.clone().unwrap_or_else(|| {
            format!(
                "sim-reviewer-{}",
                &t.hukou_region[..2.min(t.hukou_region.len())]
            )
        });
        let key = format!("review:{}", t.idempotency_key);
        let reviewer = self
            .0
            .once(&key, |_| {
                let script = Script::of(&t.application_id);
                let data = if script.review_rejects {
                    json!({"decision": "reject", "round": t.round, "reviewer": reviewer, "reason": "证件照片与身份证照片不符"})
                } else if script.correct_first && t.round == 1 {
                    json!({"decision": "request_correction", "round": t.round, "reviewer": reviewer,
                        "items": ["signature"], "message": "签名照片不清晰，请重新上传"})
                } else {
                    json!({"decision": "approve", "round": t.round, "reviewer": reviewer})
                };
                (reviewer, Report::new(EventType::ReviewDecided, &t.case_id, data))
            })
            .await?;
        Ok(Assignment { reviewer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use wangban_domain::ids::ApplicationId;

    #[test]
    fn a_remembered_key_takes_56_bytes_of_the_table() {
        assert_eq!(std::mem::size_of::<(Box<str>, Entry)>(), 56);
    }

    /// Records what was reported; refuses while `down`.
    #[derive(Default)]
    struct Bus {
        down: AtomicBool,
        reported: Mutex<Vec<Value>>,
    }

    #[async_trait]
    impl Ingress for Bus {
        async fn report(&self, _: EventType, _: &CaseId, data: Value) -> Result<(), String> {
            if self.down.load(Ordering::SeqCst) {
                return Err("broker away".into());
            }
            self.reported.lock().unwrap().push(data);
            Ok(())
        }
    }

    fn request() -> PaymentRequest {
        let app = "WB-2026-SIM-000001";
        PaymentRequest {
            idempotency_key: "case:fee".into(),
            case_id: CaseId::for_application(&ApplicationId::parse(app).unwrap()),
            application_id: app.into(),
            amount_cny: 120,
        }
    }

    #[tokio::test]
    async fn a_job_is_accepted_only_once_its_answer_is_published() {
        let bus = Arc::new(Bus::default());
        let payment = Simulation::new(bus.clone(), Duration::ZERO).payment();

        bus.down.store(true, Ordering::SeqCst);
        let err = payment.create_order(&request()).await.unwrap_err();
        assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
        assert!(bus.reported.lock().unwrap().is_empty());

        // The retried call publishes the pending answer under the same order id …
        bus.down.store(false, Ordering::SeqCst);
        let order = payment.create_order(&request()).await.unwrap();
        let reported = bus.reported.lock().unwrap().clone();
        assert_eq!(reported.len(), 1, "published before the call returned");
        assert_eq!(reported[0]["payment_id"], order.gateway_order_id.as_str());

        // … and a call after that is answered from the ledger, with nothing published again.
        let again = payment.create_order(&request()).await.unwrap();
        assert_eq!(again.gateway_order_id, order.gateway_order_id);
        assert_eq!(bus.reported.lock().unwrap().len(), 1);
    }
}
