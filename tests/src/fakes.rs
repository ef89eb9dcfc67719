//! HTTP fakes of the four providers, on one local port, speaking the APIs the adapters of
//! `wangban_providers::http` speak. They check wangban's request signatures, honour idempotency
//! keys (one effect per key, the same answer every time), send signed callbacks back, and can be
//! told to misbehave: latency, 5xx, hanging past the client's timeout, throttling (429 with
//! `Retry-After`, or the SMS API's rate-limit code), duplicated and out-of-order callbacks.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wangban_providers::signing;

/// What a party does with its next requests.
#[derive(Clone, Debug, Default)]
pub struct Knobs {
    /// The next n requests answer 503 (no `Retry-After`).
    pub fail_5xx: u32,
    /// The next n requests hang past the client's timeout.
    pub hang: u32,
    /// The next n new requests take effect, but the answer is lost (the fake hangs past the
    /// client's timeout): the retry must not make a second effect.
    pub lost_answer: u32,
    /// Send no callbacks (the test sends its own).
    pub no_callbacks: bool,
    /// The next n requests answer 429 with `Retry-After: retry_after_s`.
    pub throttle: u32,
    pub retry_after_s: u64,
    /// The next n SMS requests answer 200 with `Code: isv.BUSINESS_LIMIT_CONTROL`.
    pub limit_code: u32,
    /// Added to every answer.
    pub latency_ms: u64,
    /// Every callback sent twice (each a separately signed request).
    pub duplicate_callbacks: bool,
    /// Courier statuses reported backwards (delivered first).
    pub out_of_order: bool,
}

/// One request a fake received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub party: String,
    pub key: String,
    pub at: Instant,
    /// What the fake answered (HTTP status; 0 for a hang).
    pub status: u16,
    pub code: String,
    /// The request's W3C `traceparent` header.
    pub traceparent: Option<String>,
}

pub struct FakeState {
    pub key_id: String,
    pub secret: Vec<u8>,
    /// Where SMS delivery receipts go (set at the provider's console; here by the test).
    pub receipt_url: Mutex<Option<String>>,
    pub knobs: Mutex<HashMap<String, Knobs>>,
    pub seen: Mutex<Vec<Seen>>,
    /// Idempotency key → the answer given (the first time the effect happened).
    answers: Mutex<HashMap<String, Value>>,
    /// Effects per key: 1 for every key, whatever the repeats (asserted by the tests).
    effects: Mutex<HashMap<String, u32>>,
    counter: AtomicU64,
    pub callbacks_sent: AtomicU64,
    pub bad_signatures: AtomicU64,
    client: reqwest::Client,
}

/// The fakes, serving until dropped.
pub struct FakeParties {
    pub base: String,
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeParties {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeParties {
    /// Starts the fakes on a free port with the secret they share with wangban.
    pub async fn start(key_id: &str, secret: &str) -> FakeParties {
        let state = Arc::new(FakeState {
            key_id: key_id.into(),
            secret: secret.as_bytes().to_vec(),
            receipt_url: Mutex::new(None),
            knobs: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            answers: Mutex::new(HashMap::new()),
            effects: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            callbacks_sent: AtomicU64::new(0),
            bad_signatures: AtomicU64::new(0),
            client: reqwest::Client::new(),
        });
        let app = Router::new()
            .route("/{party}/{*rest}", post(request))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeParties { base, state, task }
    }

    /// The base URL of `party` (`sms`, `payment`, `production`, `courier`).
    pub fn url(&self, party: &str) -> String {
        format!("{}/{party}", self.base)
    }

    /// Sets what `party` does next.
    pub fn set(&self, party: &str, knobs: Knobs) {
        self.state.knobs.lock().unwrap().insert(party.into(), knobs);
    }

    /// Requests `party` received, in order.
    pub fn seen(&self, party: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.party == party)
            .cloned()
            .collect()
    }

    /// The answer `party` gave for idempotency key `key`.
    pub fn answer(&self, party: &str, key: &str) -> Option<Value> {
        self.state
            .answers
            .lock()
            .unwrap()
            .get(&format!("{party}|{key}"))
            .cloned()
    }

    /// Effects per idempotency key of `party` (a key prefixed `party|`).
    pub fn effects(&self, party: &str) -> HashMap<String, u32> {
        let prefix = format!("{party}|");
        self.state
            .effects
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(k, n)| k.strip_prefix(&prefix).map(|k| (k.to_owned(), *n)))
            .collect()
    }
}

/// Takes one knob: true when it was set (and counts it down).
fn take(state: &FakeState, party: &str, pick: impl Fn(&mut Knobs) -> &mut u32) -> bool {
    let mut knobs = state.knobs.lock().unwrap();
    let Some(k) = knobs.get_mut(party) else {
        return false;
    };
    let n = pick(k);
    if *n > 0 {
        *n -= 1;
        true
    } else {
        false
    }
}

fn knobs(state: &FakeState, party: &str) -> Knobs {
    state
        .knobs
        .lock()
        .unwrap()
        .get(party)
        .cloned()
        .unwrap_or_default()
}

async fn request(
    State(state): State<Arc<FakeState>>,
    Path((party, _rest)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let checked = signing::verify(
        |n| headers.get(n).and_then(|v| v.to_str().ok()),
        |id| (id == state.key_id).then_some(state.secret.as_slice()),
        &body,
        signing::unix_now(),
        300,
    );
    if checked.is_err() {
        state.bad_signatures.fetch_add(1, Ordering::Relaxed);
        return (StatusCode::UNAUTHORIZED, "bad signature").into_response();
    }
    let v: Value = serde_json::from_slice(&body).unwrap_or_default();
    let key = ["OutId", "out_trade_no", "order_id"]
        .iter()
        .find_map(|f| v.get(*f).and_then(Value::as_str))
        .unwrap_or("")
        .to_owned();
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let record = |status: u16, code: &str| {
        state.seen.lock().unwrap().push(Seen {
            party: party.clone(),
            key: key.clone(),
            at: Instant::now(),
            status,
            code: code.into(),
            traceparent: traceparent.clone(),
        });
    };
    let k = knobs(&state, &party);
    if take(&state, &party, |k| &mut k.hang) {
        record(0, "hang");
        tokio::time::sleep(Duration::from_secs(30)).await;
        return StatusCode::GATEWAY_TIMEOUT.into_response();
    }
    if take(&state, &party, |k| &mut k.fail_5xx) {
        record(503, "");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"code": "busy"})),
        )
            .into_response();
    }
    if take(&state, &party, |k| &mut k.throttle) {
        record(429, "");
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", k.retry_after_s.to_string())],
            axum::Json(json!({"code": "throttled"})),
        )
            .into_response();
    }
    if party == "sms" && take(&state, &party, |k| &mut k.limit_code) {
        record(200, "isv.BUSINESS_LIMIT_CONTROL");
        return axum::Json(
            json!({"Code": "isv.BUSINESS_LIMIT_CONTROL", "Message": "触发分钟级流控"}),
        )
        .into_response();
    }
    if k.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(k.latency_ms)).await;
    }
    if party == "sms"
        && v["PhoneNumbers"]
            .as_str()
            .is_some_and(|p| p.starts_with("100"))
    {
        record(200, "isv.MOBILE_NUMBER_ILLEGAL");
        return axum::Json(json!({"Code": "isv.MOBILE_NUMBER_ILLEGAL", "Message": "非法手机号"}))
            .into_response();
    }
    let ledger_key = format!("{party}|{key}");
    let (answer, new) = {
        let mut answers = state.answers.lock().unwrap();
        match answers.get(&ledger_key) {
            Some(a) => (a.clone(), false),
            None => {
                let n = state.counter.fetch_add(1, Ordering::Relaxed) + 1;
                let a = match party.as_str() {
                    "sms" => {
                        json!({"Code": "OK", "Message": "OK", "BizId": format!("BIZ{n:08}"), "RequestId": format!("REQ{n}")})
                    }
                    "payment" => {
                        json!({"order_id": format!("PAYORD{n:08}"), "pay_url": "https://pay.example/…"})
                    }
                    "production" => json!({"centre_order_id": format!("PRD{n:08}")}),
                    "courier" => json!({"waybill_no": format!("SF{n:012}")}),
                    _ => return StatusCode::NOT_FOUND.into_response(),
                };
                answers.insert(ledger_key.clone(), a.clone());
                *state.effects.lock().unwrap().entry(ledger_key).or_default() += 1;
                (a, true)
            }
        }
    };
    let lose = new && take(&state, &party, |k| &mut k.lost_answer);
    record(if lose { 0 } else { 200 }, if lose { "lost" } else { "OK" });
    if new && !k.no_callbacks {
        let callbacks = callbacks_for(&state, &party, &v, &answer, &k);
        let st = state.clone();
        let twice = k.duplicate_callbacks;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            for (url, body) in callbacks {
                let copies = if twice { 2 } else { 1 };
                for _ in 0..copies {
                    send(&st, &url, &body).await;
                }
            }
        });
    }
    if lose {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    axum::Json(answer).into_response()
}

/// The callbacks a new request leads to: `(url, body)`, in the order they are sent.
fn callbacks_for(
    state: &FakeState,
    party: &str,
    v: &Value,
    answer: &Value,
    k: &Knobs,
) -> Vec<(String, Value)> {
    let notify = v["notify_url"].as_str().unwrap_or_default().to_owned();
    match party {
        "sms" => {
            let Some(url) = state.receipt_url.lock().unwrap().clone() else {
                return vec![];
            };
            vec![(
                url,
                json!({"receipts": [{"out_id": v["OutId"], "biz_id": answer["BizId"], "success": true,
                                              "err_code": "DELIVERED", "report_time": "2026-11-27 10:00:00"}]}),
            )]
        }
        "payment" => vec![(
            notify,
            json!({"out_trade_no": v["out_trade_no"], "order_id": answer["order_id"],
                   "payment_id": format!("PAY{}", answer["order_id"].as_str().unwrap_or("")),
                                          "amount_cny": v["amount_cny"], "status": "succeeded"}),
        )],
        "production" => {
            let prefix = if v["document_kind"] == "passport" {
                "E"
            } else {
                "C"
            };
            let n = state.counter.fetch_add(1, Ordering::Relaxed);
            vec![(
                notify,
                json!({"order_id": v["order_id"], "centre_order_id": answer["centre_order_id"], "status": "produced",
                                 "document_number": format!("{prefix}{:08}", n % 100_000_000)}),
            )]
        }
        "courier" => {
            let mut statuses = vec!["picked_up", "in_transit", "delivered"];
            if k.out_of_order {
                statuses.reverse();
            }
            statuses
                .into_iter()
                .map(|s| (notify.clone(), json!({"order_id": v["order_id"], "waybill_no": answer["waybill_no"], "status": s})))
                .collect()
        }
        _ => vec![],
    }
}

/// POSTs a signed callback until wangban takes it (each attempt freshly signed).
async fn send(state: &FakeState, url: &str, body: &Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    for _ in 0..100 {
        let signed = signing::Signed::new(&state.key_id, &state.secret, &bytes);
        let mut req = state
            .client
            .post(url)
            .header("content-type", "application/json")
            .body(bytes.clone());
        for (n, v) in signed.headers() {
            req = req.header(n, v);
        }
        if let Ok(r) = req.send().await
            && r.status().is_success()
        {
            state.callbacks_sent.fetch_add(1, Ordering::Relaxed);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the fake could not deliver a callback to {url}");
}

/// Sends one signed callback as a party would, returning wangban's status and body.
pub async fn signed_post(
    url: &str,
    key_id: &str,
    secret: &str,
    body: &[u8],
    timestamp: i64,
    nonce: &str,
) -> (u16, String) {
    let signed = signing::Signed::at(key_id, secret.as_bytes(), body, timestamp, nonce);
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (n, v) in signed.headers() {
        req = req.header(n, v);
    }
    let r = req.send().await.expect("wangban answers");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}
