//! The parties' signed callbacks: `POST /callbacks/{sms,payment,production,courier}`.
//!
//! Each callback is checked in this order, and refused with nothing changed at the first failure:
//! a party configured here (404), its signature and timestamp ([`wangban_providers::signing`];
//! 401), a body of the party's shape (400, naming the field), a nonce not seen before (409: a
//! replay). Then each report is published to the bus as an ingress event whose id is derived
//! from the report (party, provider's id, status): a party repeating a callback, or sending it in
//! a second signed request, produces the same event, which the consumers' inboxes take once.
//! A payment for no case we know is recorded for refund and acknowledged; a production or
//! courier report for no order of ours is refused (404).

use crate::AppState;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use wangban_domain::events::EventType;
use wangban_domain::ids::{CaseId, EventId};
use wangban_providers::signing;
use wangban_runtime::ingress;
use wangban_store::UnmatchedPayment;

/// Key id → shared secret.
type Secrets = HashMap<String, Arc<[u8]>>;

/// The parties whose callbacks this process takes: party → key id → shared secret.
#[derive(Clone, Default)]
pub struct CallbackKeys {
    keys: Arc<HashMap<String, Secrets>>,
    /// Largest accepted distance between a callback's timestamp and now.
    pub tolerance_s: i64,
}

impl std::fmt::Debug for CallbackKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackKeys")
            .field("parties", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CallbackKeys {
    /// Keys of `(party, key id, secret)`, timestamps accepted within `tolerance_s`.
    pub fn new(keys: &[(&str, &str, Arc<[u8]>)], tolerance_s: i64) -> CallbackKeys {
        let mut map: HashMap<String, Secrets> = HashMap::new();
        for (party, key_id, secret) in keys {
            map.entry(party.to_string())
                .or_default()
                .insert(key_id.to_string(), secret.clone());
        }
        CallbackKeys {
            keys: Arc::new(map),
            tolerance_s,
        }
    }

    /// How long a seen nonce must be remembered: a callback's timestamp is accepted within the
    /// tolerance either side of now, so twice the tolerance (and at least an hour).
    pub fn nonce_memory(&self) -> std::time::Duration {
        std::time::Duration::from_secs((2 * self.tolerance_s.max(0) as u64).max(3600))
    }
}

use crate::error_response as refuse;

/// One report of a callback.
enum Report {
    Event {
        case: CaseId,
        kind: EventType,
        id: EventId,
        data: Value,
    },
    UnknownPayment(UnmatchedPayment),
}

/// `POST /callbacks/{party}`.
pub async fn receive(
    State(s): State<AppState>,
    Path(party): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(keys) = s.callbacks.keys.get(&party) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!(
                "no callbacks are taken for `{}` here",
                party.chars().take(20).collect::<String>()
            ),
        );
    };
    let checked = signing::verify(
        |name| headers.get(name).and_then(|v| v.to_str().ok()),
        |id| keys.get(id).map(|k| &**k),
        &body,
        signing::unix_now(),
        s.callbacks.tolerance_s,
    );
    let signed = match checked {
        Ok(signed) => signed,
        Err(e) => {
            tracing::warn!(party, reason = %e, "callback refused");
            s.runtime.metrics.callback(&party, "refused_signature");
            return refuse(StatusCode::UNAUTHORIZED, e);
        }
    };
    let reports = match serde_json::from_slice::<Value>(&body)
        .map_err(|e| format!("body is not JSON: {e}"))
        .and_then(|v| parse(&party, &v))
    {
        Ok(r) => r,
        Err(why) => {
            s.runtime.metrics.callback(&party, "refused_body");
            return refuse(StatusCode::BAD_REQUEST, why);
        }
    };
    let store = &s.runtime.store;
    match store.claim_nonce(&party, &signed.nonce).await {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(party, "callback refused: nonce seen before");
            s.runtime.metrics.callback(&party, "refused_replay");
            return refuse(
                StatusCode::CONFLICT,
                "nonce already used: a replayed callback changes nothing",
            );
        }
        Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e),
    }
    let (mut published, mut refunds, mut unknown) = (0, 0, 0);
    for report in reports {
        let payment = match report {
            Report::Event {
                case,
                kind,
                id,
                data,
            } => match store.case_state(case.as_str()).await {
                Ok(Some(_)) => {
                    let event = ingress::event(
                        store.clock(),
                        kind,
                        &format!("/parties/{party}"),
                        &case,
                        Some(id),
                        data,
                    );
                    if let Err(e) = s.runtime.queue_ingress(&event).await {
                        return refuse(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("cannot take the report now: {e}"),
                        );
                    }
                    published += 1;
                    continue;
                }
                // money for a case we do not have: kept under the reference it came with
                Ok(None) if kind == EventType::PaymentReported => {
                    unmatched(&data, &format!("{case}:{FEE}"), "no such case")
                }
                Ok(None) => {
                    unknown += 1;
                    continue;
                }
                Err(e) => return refuse(StatusCode::SERVICE_UNAVAILABLE, e),
            },
            Report::UnknownPayment(p) => p,
        };
        if let Err(e) = store.record_unmatched_payment(&payment).await {
            return refuse(StatusCode::SERVICE_UNAVAILABLE, e);
        }
        refunds += 1;
    }
    s.runtime.metrics.callback(&party, "accepted");
    if published + refunds == 0 && unknown > 0 {
        return refuse(StatusCode::NOT_FOUND, "no such order");
    }
    Json(json!({"accepted": published, "recorded_for_refund": refunds, "unknown": unknown}))
        .into_response()
}

fn unmatched(data: &Value, reference: &str, why: &str) -> UnmatchedPayment {
    UnmatchedPayment {
        payment_id: data["payment_id"].as_str().unwrap_or_default().to_owned(),
        reference: reference.chars().take(100).collect(),
        amount_cny: data["amount_cny"].as_i64().unwrap_or(0),
        status: data["status"].as_str().unwrap_or_default().to_owned(),
        why: why.to_owned(),
        received_at: 0, // stamped when recorded
    }
}

fn text<'a>(v: &'a Value, field: &str) -> Result<&'a str, String> {
    let s = v
        .get(field)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty() && s.len() <= 100)
        .ok_or_else(|| format!("`{field}` must be a string of 1 to 100 characters"))?;
    if s.contains('\0') {
        return Err(format!("`{field}` contains a NUL character"));
    }
    Ok(s)
}

/// The largest amount a payment report may carry: far above any fee, far below where an
/// integer column overflows.
const MAX_AMOUNT_CNY: u64 = 1_000_000;

fn one_of<'a>(v: &'a Value, field: &str, allowed: &[&str]) -> Result<&'a str, String> {
    let s = text(v, field)?;
    if allowed.contains(&s) {
        Ok(s)
    } else {
        Err(format!("`{field}` must be one of {}", allowed.join(", ")))
    }
}

/// The suffix of our payment references (`<case id>:fee`, set by the notify worker).
const FEE: &str = "fee";

/// The case of one of our order references (`<case id>:<suffix>`).
fn case_of(reference: &str, suffix: &str) -> Option<CaseId> {
    reference
        .strip_suffix(suffix)
        .and_then(|r| r.strip_suffix(':'))
        .and_then(|c| c.parse().ok())
}

fn parse(party: &str, v: &Value) -> Result<Vec<Report>, String> {
    match party {
        "payment" => {
            let reference = text(v, "out_trade_no")?;
            let order_id = text(v, "order_id")?;
            let payment_id = text(v, "payment_id")?;
            let status = one_of(v, "status", &["succeeded", "failed", "closed"])?;
            let amount = v
                .get("amount_cny")
                .and_then(Value::as_u64)
                .filter(|a| *a <= MAX_AMOUNT_CNY)
                .ok_or(format!(
                    "`amount_cny` must be a whole number of yuan from 0 to {MAX_AMOUNT_CNY}"
                ))?;
            let data = json!({"payment_id": payment_id, "gateway_order_id": order_id,
                              "amount_cny": amount, "status": status});
            Ok(vec![match case_of(reference, FEE) {
                Some(case) => Report::Event {
                    case,
                    kind: EventType::PaymentReported,
                    id: EventId::derived(&["payment", payment_id, status]),
                    data,
                },
                None => {
                    Report::UnknownPayment(unmatched(&data, reference, "reference names no case"))
                }
            }])
        }
        "production" => {
            let order = text(v, "order_id")?;
            let centre_order_id = text(v, "centre_order_id")?;
            let status = one_of(v, "status", &["produced"])?;
            let number = text(v, "document_number")?;
            let case = case_of(order, "production").ok_or("`order_id` is not one of our orders")?;
            Ok(vec![Report::Event {
                case,
                kind: EventType::ProductionReported,
                id: EventId::derived(&["production", centre_order_id, status]),
                // Personal data: only its last two characters go further than this.
                data: json!({"centre_order_id": centre_order_id, "status": status,
                             "document_number": wangban_domain::id_number::mask(number)}),
            }])
        }
        "courier" => {
            let order = text(v, "order_id")?;
            let waybill = text(v, "waybill_no")?;
            let status = one_of(
                v,
                "status",
                &[
                    "picked_up",
                    "in_transit",
                    "delivered",
                    "failed_delivery",
                    "returned",
                ],
            )?;
            let case = case_of(order, "shipment").ok_or("`order_id` is not one of our orders")?;
            Ok(vec![Report::Event {
                case,
                kind: EventType::CourierReported,
                id: EventId::derived(&["courier", waybill, status]),
                data: json!({"waybill": waybill, "status": status}),
            }])
        }
        "sms" => {
            let receipts = v
                .get("receipts")
                .and_then(Value::as_array)
                .filter(|r| !r.is_empty() && r.len() <= 1000)
                .ok_or("`receipts` must be a list of 1 to 1000 receipts")?;
            receipts
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let at = |e: String| format!("receipts[{i}]: {e}");
                    let out_id = text(r, "out_id").map_err(at)?;
                    let biz_id = text(r, "biz_id").map_err(at)?;
                    let delivered = r
                        .get("success")
                        .and_then(Value::as_bool)
                        .ok_or_else(|| at("`success` must be true or false".into()))?;
                    let (case, purpose) = out_id
                        .split_once(':')
                        .and_then(|(c, p)| Some((c.parse::<CaseId>().ok()?, p)))
                        .ok_or_else(|| at("`out_id` is not one of our messages".into()))?;
                    let error = r.get("err_code").and_then(Value::as_str).map(|e| e.chars().take(60).collect::<String>());
                    Ok(Report::Event {
                        case,
                        kind: EventType::SmsReported,
                        id: EventId::derived(&["sms", biz_id, if delivered { "delivered" } else { "failed" }]),
                        data: json!({"purpose": purpose, "provider_id": biz_id, "delivered": delivered, "error": error}),
                    })
                })
                .collect()
        }
        _ => Err("unknown party".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payment(payment_id: &str, amount: Value) -> Value {
        json!({"out_trade_no": "case_0123456789abcdef01234567:fee", "order_id": "G1",
               "payment_id": payment_id, "status": "succeeded", "amount_cny": amount})
    }

    fn refusal(party: &str, body: &Value) -> String {
        match parse(party, body) {
            Err(why) => why,
            Ok(_) => panic!("{body} was taken"),
        }
    }

    #[test]
    fn a_nul_or_an_absurd_amount_is_refused_naming_the_field() {
        assert!(parse("payment", &payment("P1", json!(120))).is_ok());
        let mut no_order = payment("P1", json!(120));
        no_order.as_object_mut().unwrap().remove("order_id");
        assert!(refusal("payment", &no_order).contains("`order_id`"));
        assert!(refusal("payment", &payment("P\u{0}1", json!(120))).contains("`payment_id`"));
        for amount in [
            json!(1_000_001),
            json!(9_223_372_036_854_775_808_u64),
            json!(-1),
        ] {
            assert!(refusal("payment", &payment("P1", amount)).contains("`amount_cny`"));
        }
        let courier = json!({"order_id": "case_0123456789abcdef01234567:shipment",
                             "waybill_no": "SF\u{0}1", "status": "delivered"});
        assert!(refusal("courier", &courier).contains("`waybill_no`"));
    }
}
