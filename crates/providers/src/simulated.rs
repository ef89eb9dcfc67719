//! Simulated parties for the demo and tests. They behave like the real ones — idempotency keys
//! honoured, answers arriving later through [`Ingress`] — and follow a script read from markers
//! in the application id, so that any process can simulate any case without shared state:
//!
//! | marker in `application_id` | behaviour |
//! |---|---|
//! | `-CORR-` | the reviewer asks for a correction in round 1, approves the resubmission |
//! | `-REVREJ-` | the reviewer rejects |
//! | `-UNPAID-` | the applicant never pays |
//! | (none) | approve, pay, produce, deliver or collect |
//!
//! The simulated SMS gateway refuses, for good, numbers starting with `100` (no such block).

use crate::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a simulated case behaves, from its application id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Script {
    pub correct_first: bool,
    pub review_rejects: bool,
    pub never_pays: bool,
}

impl Script {
    /// The script of an application id.
    pub fn of(application_id: &str) -> Script {
        Script {
            correct_first: application_id.contains("-CORR-"),
            review_rejects: application_id.contains("-REVREJ-"),
            never_pays: application_id.contains("-UNPAID-"),
        }
    }
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
}

/// Shared by the simulated parties: where answers go, how long they take, what was asked.
#[derive(Clone)]
pub struct Simulation {
    ingress: Arc<dyn Ingress>,
    delay: Duration,
    /// Idempotency keys and the answer given, with when; like a real party's, kept for
    /// `retention` when one is set (long runs), else for the life of the process.
    ledger: Arc<Mutex<HashMap<String, (String, Instant)>>>,
    retention: Option<Duration>,
    counter: Arc<AtomicU64>,
    faults: SimFaults,
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
        }
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

    /// A transient error when `party` is listed in the outage file.
    fn up(&self, party: &str) -> Result<(), ProviderError> {
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

    /// Returns the answer already given for `key`, or makes a new one with `make` (and `true`).
    fn once(&self, key: &str, make: impl FnOnce(u64) -> String) -> (String, bool) {
        let mut ledger = self.ledger.lock().expect("ledger lock");
        if let Some((v, _)) = ledger.get(key) {
            return (v.clone(), false);
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(retention) = self.retention
            && n.is_multiple_of(1024)
        {
            ledger.retain(|_, (_, at)| at.elapsed() < retention);
        }
        let v = make(n);
        ledger.insert(key.to_owned(), (v.clone(), Instant::now()));
        (v, true)
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

    fn answer_later(&self, kind: EventType, case: CaseId, data: Value) {
        if self.faults.duplicate_answers {
            // the copy comes late: after other answers, sometimes after later events of the case
            let extra =
                Duration::from_millis(50 + self.counter.fetch_add(1, Ordering::Relaxed) % 400);
            self.send_later(kind, case.clone(), data.clone(), self.delay + extra);
            if kind == EventType::CourierReported && data["status"] == "delivered" {
                let stale = serde_json::json!({"waybill": data["waybill"], "status": "in_transit"});
                self.send_later(kind, case.clone(), stale, self.delay + extra * 2);
            }
        }
        self.send_later(kind, case, data, self.delay);
    }

    fn send_later(&self, kind: EventType, case: CaseId, data: Value, delay: Duration) {
        let ingress = self.ingress.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
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
        self.0.up("sms")?;
        // No mobile number block starts with 100: the gateway refuses such a number for good.
        if m.phone.starts_with("100") {
            return Err(ProviderError::Permanent("invalid mobile number".into()));
        }
        let (id, _) = self.0.once(&format!("sms:{}", m.idempotency_key), |n| {
            format!("SIMSMS{n:08}")
        });
        Ok(SmsReceipt { provider_id: id })
    }
}

#[async_trait]
impl PaymentGateway for SimPayment {
    async fn create_order(&self, r: &PaymentRequest) -> Result<PaymentOrder, ProviderError> {
        self.0.up("payment")?;
        let (id, new) = self.0.once(&format!("payment:{}", r.idempotency_key), |n| {
            format!("SIMPAY{n:08}")
        });
        if new && !Script::of(&r.application_id).never_pays {
            let data = serde_json::json!({"payment_id": id, "amount_cny": r.amount_cny, "status": "succeeded"});
            self.0
                .answer_later(EventType::PaymentReported, r.case_id.clone(), data);
        }
        Ok(PaymentOrder {
            gateway_order_id: id,
        })
    }
}

#[async_trait]
impl ProductionCentre for SimProduction {
    async fn place_order(&self, o: &ProductionOrder) -> Result<ProductionAck, ProviderError> {
        self.0.up("production")?;
        let (id, new) = self
            .0
            .once(&format!("production:{}", o.idempotency_key), |n| {
                format!("SIMPRD{n:08}")
            });
        if new {
            let prefix = if o.document_kind == "passport" {
                "E"
            } else {
                "C"
            };
            let number = format!(
                "{prefix}{:08}",
                self.0.counter.fetch_add(1, Ordering::Relaxed) % 100_000_000
            );
            let data = serde_json::json!({"centre_order_id": id, "status": "produced", "document_number": number});
            self.0
                .answer_later(EventType::ProductionReported, o.case_id.clone(), data);
        }
        Ok(ProductionAck {
            centre_order_id: id,
        })
    }
}

#[async_trait]
impl Courier for SimCourier {
    async fn book(&self, s: &ShipmentRequest) -> Result<Booking, ProviderError> {
        self.0.up("courier")?;
        let (waybill, new) = self
            .0
            .once(&format!("shipment:{}", s.idempotency_key), |n| {
                format!("SF{n:012}")
            });
        if new {
            let data = serde_json::json!({"waybill": waybill, "status": "delivered"});
            self.0
                .answer_later(EventType::CourierReported, s.case_id.clone(), data);
        }
        Ok(Booking { waybill })
    }
}

#[async_trait]
impl PickupHall for SimHall {
    async fn announce(&self, n: &PickupNotice) -> Result<PickupSlot, ProviderError> {
        self.0.up("hall")?;
        let hall = format!("户籍地（{}）公安机关出入境接待大厅", &n.hukou_region);
        let (_, new) = self
            .0
            .once(&format!("pickup:{}", n.idempotency_key), |_| hall.clone());
        if new {
            self.0.answer_later(
                EventType::PickupReported,
                n.case_id.clone(),
                serde_json::json!({"status": "collected"}),
            );
        }
        Ok(PickupSlot { hall })
    }
}

#[async_trait]
impl ReviewDesk for SimDesk {
    async fn assign(&self, t: &ReviewTask) -> Result<Assignment, ProviderError> {
        self.0.up("review")?;
        let reviewer = t.preferred_reviewer.clone().unwrap_or_else(|| {
            format!(
                "sim-reviewer-{}",
                &t.hukou_region[..2.min(t.hukou_region.len())]
            )
        });
        let (reviewer, new) = self
            .0
            .once(&format!("review:{}", t.idempotency_key), |_| reviewer);
        if new {
            let script = Script::of(&t.application_id);
            let data = if script.review_rejects {
                serde_json::json!({"decision": "reject", "round": t.round, "reviewer": reviewer, "reason": "证件照片与身份证照片不符"})
            } else if script.correct_first && t.round == 1 {
                serde_json::json!({"decision": "request_correction", "round": t.round, "reviewer": reviewer,
                    "items": ["signature"], "message": "签名照片不清晰，请重新上传"})
            } else {
                serde_json::json!({"decision": "approve", "round": t.round, "reviewer": reviewer})
            };
            self.0
                .answer_later(EventType::ReviewDecided, t.case_id.clone(), data);
        }
        Ok(Assignment { reviewer })
    }
}
