//! The parties over HTTP: what a provider's engineer integrates with. One [`HttpParty`] client per
//! party does the transport — signed JSON requests ([`crate::signing`]), a timeout per attempt,
//! retries with exponential backoff and jitter on timeouts, connection errors and 5xx, throttling
//! answers obeyed (429 or 503 with `Retry-After`, or a provider's own rate-limit code) — and the
//! adapters ([`HttpSms`], [`HttpPayment`], [`HttpProduction`], [`HttpCourier`]) speak each
//! party's API on top of it. Every request carries our idempotency key, which the party must
//! honour: a request repeated after a crash or a redelivery has no second effect.
//!
//! An attempt budget bounds the retries inside one delivery; when it is spent the error is
//! transient and the worker's delivery is retried later (then dead-lettered, and replayable), so
//! a long outage holds nothing and loses nothing. Only an answer that can never succeed for this
//! request (an invalid phone number, a refused address) is [`ProviderError::Permanent`].
//! Credentials or configuration refused by a party (401/403, unknown template) are transient: the
//! fix is ours, and the message must still go out once it is made.
//!
//! Nothing personal is logged: log lines carry the party, the path, the attempt and the status.

use crate::*;
use backon::{BackoffBuilder, ExponentialBuilder};
use std::sync::Arc;
use std::time::Duration;

/// Where a party is and how to talk to it.
#[derive(Clone)]
pub struct Endpoint {
    /// `sms`, `payment`, `production` or `courier` (for logs).
    pub party: &'static str,
    /// e.g. `https://sms.example.com/api`; paths are appended.
    pub base_url: String,
    pub key_id: String,
    /// Shared with the party: signs our requests and its callbacks.
    pub secret: Arc<[u8]>,
    /// For one attempt, connect to last byte.
    pub timeout: Duration,
    /// Attempts of one request within one delivery (≥ 1).
    pub attempts: u32,
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is not waited out inside a delivery: the delivery is
    /// retried later instead.
    pub max_retry_after: Duration,
    /// Where the party sends its callbacks (our `/callbacks/<party>`), when it takes it per
    /// request.
    pub callback_url: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("party", &self.party)
            .field("base_url", &self.base_url)
            .field("key_id", &self.key_id)
            .field("secret", &"***")
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with the default timeout (5 s), budget (4 attempts, 200 ms – 5 s backoff) and
    /// longest `Retry-After` waited out (10 s).
    pub fn new(party: &'static str, base_url: &str, key_id: &str, secret: &[u8]) -> Endpoint {
        Endpoint {
            party,
            base_url: base_url.trim_end_matches('/').to_owned(),
            key_id: key_id.to_owned(),
            secret: Arc::from(secret),
            timeout: Duration::from_secs(5),
            attempts: 4,
            min_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
            callback_url: None,
        }
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Answer {
    Done(Value),
    /// Slow down: wait at least the given time (when the party said) before the next attempt.
    Throttled(Option<Duration>, String),
    Transient(String),
    Permanent(String),
}

/// The transport to one party.
#[derive(Clone, Debug)]
pub struct HttpParty {
    endpoint: Endpoint,
    client: reqwest::Client,
    /// When the party last asked us to wait (`Retry-After`), no request of this process goes
    /// out before this instant: throttling is about us, not about one request.
    not_before: Arc<std::sync::Mutex<Option<tokio::time::Instant>>>,
}

impl HttpParty {
    pub fn new(endpoint: Endpoint) -> Result<HttpParty, ProviderError> {
        let client = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(endpoint.timeout)
            .user_agent(concat!("wangban/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ProviderError::Permanent(format!("HTTP client: {e}")))?;
        Ok(HttpParty {
            endpoint,
            client,
            not_before: Default::default(),
        })
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// POSTs `body` to `path`, retrying within the budget; `business` classifies a 2xx answer's
    /// JSON (providers report some failures inside a 200).
    pub async fn call(
        &self,
        path: &str,
        idempotency_key: &str,
        body: &Value,
        business: impl Fn(Value) -> Answer,
    ) -> Result<Value, ProviderError> {
        let ep = &self.endpoint;
        let bytes =
            serde_json::to_vec(body).map_err(|e| ProviderError::Permanent(e.to_string()))?;
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(ep.min_backoff)
            .with_max_delay(ep.max_backoff)
            .with_max_times(ep.attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let gate = *self.not_before.lock().expect("gate lock");
            if let Some(at) = gate {
                let now = tokio::time::Instant::now();
                if at > now + ep.max_retry_after {
                    return Err(ProviderError::Transient(format!(
                        "{} asked us to wait {} s more",
                        ep.party,
                        (at - now).as_secs()
                    )));
                }
                tokio::time::sleep_until(at).await;
            }
            let answer = match self.attempt(path, idempotency_key, &bytes).await {
                Answer::Done(v) => business(v),
                other => other,
            };
            // `hint`: how long the party asked us to wait, when it said
            let (hint, why) = match answer {
                Answer::Done(v) => return Ok(v),
                Answer::Permanent(m) => return Err(ProviderError::Permanent(m)),
                Answer::Transient(m) => (None, m),
                Answer::Throttled(h, m) => (h, m),
            };
            let Some(next) = backoff.next() else {
                return Err(ProviderError::Transient(format!(
                    "{} {path}: {why} (gave up after {attempt} attempts)",
                    ep.party
                )));
            };
            if let Some(asked) = hint {
                let until = tokio::time::Instant::now() + asked;
                let mut gate = self.not_before.lock().expect("gate lock");
                *gate = Some(gate.map_or(until, |g| g.max(until)));
            }
            let wait = match hint {
                Some(asked) if asked > ep.max_retry_after => {
                    return Err(ProviderError::Transient(format!(
                        "{} {path}: {why}; asks to wait {} s, longer than this delivery waits",
                        ep.party,
                        asked.as_secs()
                    )));
                }
                Some(asked) => asked.max(next),
                None => next,
            };
            tracing::warn!(party = ep.party, path, attempt, wait_ms = wait.as_millis() as u64, reason = %why, "provider call failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, path: &str, idempotency_key: &str, body: &[u8]) -> Answer {
        let ep = &self.endpoint;
        let signed = signing::Signed::new(&ep.key_id, &ep.secret, body);
        let mut request = self
            .client
            .post(format!("{}{path}", ep.base_url))
            .header("content-type", "application/json")
            .header("idempotency-key", idempotency_key)
            .body(body.to_vec());
        if let Some(traceparent) = crate::current_traceparent() {
            request = request.header("traceparent", traceparent);
        }
        for (name, value) in signed.headers() {
            request = request.header(name, value);
        }
        let response = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Answer::Transient(format!("timed out after {} ms", ep.timeout.as_millis()));
            }
            Err(e) if e.is_connect() => return Answer::Transient("cannot connect".into()),
            Err(_) => return Answer::Transient("request failed".into()),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = match response.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => {
                return Answer::Transient(format!("timed out after {} ms", ep.timeout.as_millis()));
            }
            Err(_) => return Answer::Transient(format!("HTTP {status}: body cut off")),
        };
        let json: Option<Value> = serde_json::from_slice(&text).ok();
        let said = json.as_ref().map(summary).unwrap_or_default();
        match status {
            200..=299 => match json {
                Some(v) => Answer::Done(v),
                None => Answer::Transient(format!("HTTP {status}: answer is not JSON")),
            },
            429 => Answer::Throttled(retry_after, format!("HTTP 429 throttled{said}")),
            503 if retry_after.is_some() => {
                Answer::Throttled(retry_after, format!("HTTP 503{said}"))
            }
            408 | 500..=599 => Answer::Transient(format!("HTTP {status}{said}")),
            // our credentials or configuration: the fix is ours, the request must survive it
            401 | 403 => Answer::Transient(format!("HTTP {status} (check the credentials){said}")),
            _ => Answer::Permanent(format!("HTTP {status}{said}")),
        }
    }
}

/// `: <code> <message>` of a provider's error answer, without anything that looks like a number
/// of ours (a phone or ID number echoed back must not reach logs or the audit).
fn summary(v: &Value) -> String {
    let field = |names: &[&str]| {
        names
            .iter()
            .find_map(|n| v.get(*n).and_then(Value::as_str))
            .unwrap_or("")
            .chars()
            .take(120)
            .collect::<String>()
    };
    let text = format!(
        "{} {}",
        field(&["code", "Code", "error"]),
        field(&["message", "Message"])
    );
    let text = mask_digits(text.trim());
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// Replaces every run of 6 or more digits with `***`.
pub fn mask_digits(s: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    for c in s.chars().chain(std::iter::once('\0')) {
        if c.is_ascii_digit() || (c == 'X' && !run.is_empty()) {
            run.push(c);
            continue;
        }
        if run.len() >= 6 {
            out.push_str("***");
        } else {
            out.push_str(&run);
        }
        run.clear();
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

fn str_field(v: &Value, name: &str) -> Option<String> {
    v.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The id a party's success answer must carry; without it the call failed transiently (retried).
fn required(v: &Value, name: &str, party: &str) -> Result<String, ProviderError> {
    str_field(v, name)
        .ok_or_else(|| ProviderError::Transient(format!("{party} answer has no {name}")))
}

/// The SMS gateway, in the shape of the common Chinese SMS APIs: sign name, template code,
/// template parameters as a JSON string, our out-id; the answer's `Code` is `OK` or a reason.
///
/// ```text
/// POST {base}/sms/send
/// {"PhoneNumbers":"13800138000","SignName":"国家移民管理局","TemplateCode":"WANGBAN_FEE_DUE",
///  "TemplateParam":"{\"amount\":\"120\",\"days\":\"7\"}","OutId":"<case>:fee_due"}
/// → {"Code":"OK","Message":"OK","BizId":"…","RequestId":"…"}
/// ```
/// Delivery receipts arrive at `/callbacks/sms`.
#[derive(Clone, Debug)]
pub struct HttpSms {
    pub party: HttpParty,
    pub sign_name: String,
    /// Prepended to the template name (`WANGBAN_` + `FEE_DUE` or `FEE_DUE_PERMIT`).
    pub template_prefix: String,
}

/// Answer codes of the SMS API that mean "too fast, slow down".
const SMS_THROTTLED: [&str; 3] = [
    "isv.BUSINESS_LIMIT_CONTROL",
    "Throttling.User",
    "isv.DAY_LIMIT_CONTROL",
];
/// Answer codes that mean this number can never receive it.
const SMS_NUMBER_REFUSED: [&str; 2] = ["isv.MOBILE_NUMBER_ILLEGAL", "isv.BLACK_KEY_CONTROL_LIMIT"];

impl HttpSms {
    /// The template code of a message.
    pub fn template_code(&self, m: &SmsMessage) -> String {
        format!(
            "{}{}",
            self.template_prefix,
            m.template.to_ascii_uppercase()
        )
    }
}

#[async_trait]
impl SmsGateway for HttpSms {
    async fn send(&self, m: &SmsMessage) -> Result<SmsReceipt, ProviderError> {
        let params = serde_json::to_string(&m.params).unwrap_or_else(|_| "{}".into());
        let body = serde_json::json!({
            "PhoneNumbers": m.phone,
            "SignName": self.sign_name,
            "TemplateCode": self.template_code(m),
            "TemplateParam": params,
            "OutId": m.idempotency_key,
        });
        let answer = self
            .party
            .call("/sms/send", &m.idempotency_key, &body, |v| {
                let code = str_field(&v, "Code").unwrap_or_default();
                match code.as_str() {
                    "OK" => Answer::Done(v),
                    c if SMS_THROTTLED.contains(&c) => {
                        Answer::Throttled(None, format!("rate limited ({c})"))
                    }
                    c if SMS_NUMBER_REFUSED.contains(&c) => {
                        Answer::Permanent(format!("number refused ({c})"))
                    }
                    c => Answer::Transient(format!("gateway answered {}", mask_digits(c))),
                }
            })
            .await?;
        let provider_id = required(&answer, "BizId", "SMS")?;
        Ok(SmsReceipt { provider_id })
    }
}

/// The payment gateway: a payment order for the fee; the result arrives at
/// `/callbacks/payment` (the `notify_url`).
///
/// ```text
/// POST {base}/v1/orders
/// {"out_trade_no":"<case>:fee","amount_cny":120,"description":"…","notify_url":"…"}
/// → {"order_id":"…","pay_url":"…"}
/// ```
#[derive(Clone, Debug)]
pub struct HttpPayment {
    pub party: HttpParty,
}

#[async_trait]
impl PaymentGateway for HttpPayment {
    async fn create_order(&self, r: &PaymentRequest) -> Result<PaymentOrder, ProviderError> {
        let body = serde_json::json!({
            "out_trade_no": r.idempotency_key,
            "amount_cny": r.amount_cny,
            "description": "出入境证件工本费",
            "notify_url": self.party.endpoint().callback_url,
        });
        let v = self
            .party
            .call("/v1/orders", &r.idempotency_key, &body, Answer::Done)
            .await?;
        let gateway_order_id = required(&v, "order_id", "payment")?;
        Ok(PaymentOrder { gateway_order_id })
    }
}

/// The card-production centre: a production order; completion (with the new document number)
/// arrives at `/callbacks/production`. The centre takes the applicant's data and photographs from
/// the application system by `application_id`; the order carries none of it.
///
/// ```text
/// POST {base}/v1/production-orders
/// {"order_id":"<case>:production","application_id":"…","document_kind":"passport","notify_url":"…"}
/// → {"centre_order_id":"…"}
/// ```
#[derive(Clone, Debug)]
pub struct HttpProduction {
    pub party: HttpParty,
}

#[async_trait]
impl ProductionCentre for HttpProduction {
    async fn place_order(&self, o: &ProductionOrder) -> Result<ProductionAck, ProviderError> {
        let body = serde_json::json!({
            "order_id": o.idempotency_key,
            "application_id": o.application_id,
            "document_kind": o.document_kind,
            "notify_url": self.party.endpoint().callback_url,
        });
        let v = self
            .party
            .call(
                "/v1/production-orders",
                &o.idempotency_key,
                &body,
                Answer::Done,
            )
            .await?;
        let centre_order_id = required(&v, "centre_order_id", "production")?;
        Ok(ProductionAck { centre_order_id })
    }
}

/// The courier: a shipment with postage paid by the recipient on delivery (到付,
/// `pay_method: "freight_collect"`); status updates arrive at `/callbacks/courier`.
///
/// ```text
/// POST {base}/v1/shipments
/// {"order_id":"<case>:shipment","pay_method":"freight_collect","cargo":"出入境证件",
///  "recipient":{"name":"…","phone":"…","address":"…","postcode":"…"},"notify_url":"…"}
/// → {"waybill_no":"SF…"}
/// ```
#[derive(Clone, Debug)]
pub struct HttpCourier {
    pub party: HttpParty,
}

#[async_trait]
impl Courier for HttpCourier {
    async fn book(&self, s: &ShipmentRequest) -> Result<Booking, ProviderError> {
        let body = serde_json::json!({
            "order_id": s.idempotency_key,
            "pay_method": "freight_collect",
            "cargo": "出入境证件",
            "recipient": {
                "name": s.recipient, "phone": s.phone, "address": s.address, "postcode": s.postcode,
            },
            "notify_url": self.party.endpoint().callback_url,
        });
        let v = self
            .party
            .call("/v1/shipments", &s.idempotency_key, &body, |v| {
                match v.get("error").and_then(Value::as_str) {
                    Some("address_not_served") => {
                        Answer::Permanent("courier does not serve the address".into())
                    }
                    _ => Answer::Done(v),
                }
            })
            .await?;
        let waybill = required(&v, "waybill_no", "courier")?;
        Ok(Booking { waybill })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_digit_runs_are_masked() {
        assert_eq!(mask_digits("bad number 13800138000"), "bad number ***");
        assert_eq!(mask_digits("id 11010519900307128X ok"), "id *** ok");
        assert_eq!(mask_digits("HTTP 503 code 42"), "HTTP 503 code 42");
    }
}
