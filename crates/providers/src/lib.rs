//! The parties outside wangban, each behind a trait the workers call:
//! [`SmsGateway`], [`PaymentGateway`], [`ProductionCentre`], [`Courier`], [`PickupHall`] and
//! [`ReviewDesk`]. Every request carries an idempotency key that the party must honour, so a
//! request repeated after a crash has no second effect at the party.
//!
//! Parties answer later through [`Ingress`] (in production: signed HTTP callbacks; here: the
//! simulated parties of [`simulated`]), which publishes the answer as an event on the bus.

pub mod http;
pub mod signing;
pub mod simulated;

tokio::task_local! {
    /// The W3C `traceparent` of the effect attempt being carried out (set by the runtime's
    /// executor around a call): the HTTP adapters send it, so a party's traces join the case's.
    pub static TRACEPARENT: String;
}

/// The `traceparent` of the call in progress, if the executor set one.
pub fn current_traceparent() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok()
}

use async_trait::async_trait;
use serde_json::Value;
use std::collections::BTreeMap;
use wangban_domain::events::EventType;
use wangban_domain::ids::CaseId;

/// A provider error, classified once.
#[derive(Clone, Debug, thiserror::Error)]
pub enum ProviderError {
    /// Timeouts, 5xx, throttling: retry with backoff.
    #[error("provider temporarily unavailable: {0}")]
    Transient(String),
    /// The request can never succeed (e.g. an invalid phone number): record, do not retry.
    #[error("provider refused the request: {0}")]
    Permanent(String),
}

/// One SMS to an applicant.
#[derive(Clone, Debug)]
pub struct SmsMessage {
    /// `case_id:purpose` — the provider's out-id: one SMS per (case, purpose).
    pub idempotency_key: String,
    pub phone: String,
    /// What the message is for (`fee_due`, `shipped`, …).
    pub purpose: String,
    /// The provider template: the purpose, with `_permit` for permits (whose texts carry the
    /// no-endorsement note).
    pub template: String,
    pub params: BTreeMap<String, String>,
    /// The full Chinese text, as the template renders it.
    pub text: String,
}

/// The gateway's acceptance of an SMS.
#[derive(Clone, Debug)]
pub struct SmsReceipt {
    pub provider_id: String,
}

/// The SMS gateway.
#[async_trait]
pub trait SmsGateway: Send + Sync {
    async fn send(&self, message: &SmsMessage) -> Result<SmsReceipt, ProviderError>;
}

/// A request to collect the document fee.
#[derive(Clone, Debug)]
pub struct PaymentRequest {
    pub idempotency_key: String,
    pub case_id: CaseId,
    pub application_id: String,
    pub amount_cny: u32,
}

/// The gateway's payment order.
#[derive(Clone, Debug)]
pub struct PaymentOrder {
    pub gateway_order_id: String,
}

/// The payment gateway; results arrive later as `payment.reported`.
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    async fn create_order(&self, request: &PaymentRequest) -> Result<PaymentOrder, ProviderError>;
}

/// A production order for the card-production centre.
#[derive(Clone, Debug)]
pub struct ProductionOrder {
    pub idempotency_key: String,
    pub case_id: CaseId,
    pub application_id: String,
    pub document_kind: String,
}

/// The centre's acceptance of an order.
#[derive(Clone, Debug)]
pub struct ProductionAck {
    pub centre_order_id: String,
}

/// The card-production centre; completion arrives later as `production.reported`.
#[async_trait]
pub trait ProductionCentre: Send + Sync {
    async fn place_order(&self, order: &ProductionOrder) -> Result<ProductionAck, ProviderError>;
}

/// A shipment, postage paid by the recipient on delivery (到付).
#[derive(Clone, Debug)]
pub struct ShipmentRequest {
    pub idempotency_key: String,
    pub case_id: CaseId,
    /// Ours, not sent to the courier (the simulated one reads its script from it).
    pub application_id: String,
    pub recipient: String,
    pub phone: String,
    pub address: String,
    pub postcode: String,
}

/// The courier's booking.
#[derive(Clone, Debug)]
pub struct Booking {
    pub waybill: String,
}

/// The courier; status updates arrive later as `courier.reported`.
#[async_trait]
pub trait Courier: Send + Sync {
    async fn book(&self, shipment: &ShipmentRequest) -> Result<Booking, ProviderError>;
}

/// A document ready for pickup at the hall of the household registration's district.
#[derive(Clone, Debug)]
pub struct PickupNotice {
    pub idempotency_key: String,
    pub case_id: CaseId,
    /// Ours (the simulated hall reads its script from it).
    pub application_id: String,
    pub hukou_region: String,
}

/// The hall's answer: where the applicant collects it.
#[derive(Clone, Debug)]
pub struct PickupSlot {
    pub hall: String,
    /// Whether the hall's staff will report the document's arrival (`pickup.reported`
    /// `arrived`) before it is ready for pickup; false: ready at once (the simulated hall).
    pub awaiting_arrival: bool,
}

/// The exit-entry hall; arrival (from a staffed hall) and collection arrive later as
/// `pickup.reported`.
#[async_trait]
pub trait PickupHall: Send + Sync {
    async fn announce(&self, notice: &PickupNotice) -> Result<PickupSlot, ProviderError>;
}

/// A case to review.
#[derive(Clone, Debug)]
pub struct ReviewTask {
    pub idempotency_key: String,
    pub case_id: CaseId,
    pub application_id: String,
    pub hukou_region: String,
    /// 1 for the first review, +1 per resubmission.
    pub round: i64,
    /// The reviewer who asked for the correction, to get the resubmission back where possible.
    pub preferred_reviewer: Option<String>,
}

/// Who reviews it.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub reviewer: String,
}

/// The reviewers of the hukou district's office; decisions arrive later as `review.decided`.
#[async_trait]
pub trait ReviewDesk: Send + Sync {
    async fn assign(&self, task: &ReviewTask) -> Result<Assignment, ProviderError>;
}

/// Where parties' answers enter the pipeline: publishes an event about `case` on the bus.
#[async_trait]
pub trait Ingress: Send + Sync {
    async fn report(&self, kind: EventType, case: &CaseId, data: Value) -> Result<(), String>;
}
