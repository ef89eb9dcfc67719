//! The parties' executors: each turns an effect command into its party's request, filling in
//! from the case what the command does not carry (the phone number, the address — personal data
//! that stays out of the command table), and the party's reply into the effect's result.

use crate::parties::Parties;
use async_trait::async_trait;
use serde_json::json;
use std::sync::Arc;
use wangban_domain::application::{Application, Delivery};
use wangban_domain::effects::{Effect, Outcome, Party};
use wangban_providers::{
    PaymentRequest, PickupNotice, ProductionOrder, ProviderError, ReviewTask, ShipmentRequest,
    SmsMessage,
};
use wangban_runtime::Executor;
use wangban_store::CaseRecord;

/// The executor of one party over `parties`.
pub struct PartyExecutor {
    party: Party,
    parties: Arc<Parties>,
}

/// The executors of `parties`, one per party in `wanted`.
pub fn executors(parties: &Arc<Parties>, wanted: &[Party]) -> Vec<Arc<dyn Executor>> {
    wanted
        .iter()
        .map(|p| {
            Arc::new(PartyExecutor {
                party: *p,
                parties: parties.clone(),
            }) as Arc<dyn Executor>
        })
        .collect()
}

/// The parties whose effects a worker requests: its executors run in the worker's processes.
pub fn parties_of(worker: &str, staffed_desk: bool) -> &'static [Party] {
    match worker {
        "notify" => &[Party::Sms, Party::Payment],
        "production" => &[Party::Production],
        "courier" => &[Party::Courier, Party::Hall],
        "review" if !staffed_desk => &[Party::Desk],
        _ => &[],
    }
}

fn application(case: &CaseRecord) -> Result<Application, ProviderError> {
    Application::parse(case.application.as_bytes()).map_err(|e| {
        ProviderError::Permanent(format!("stored application of {}: {e}", case.case_id))
    })
}

fn mismatch(party: Party, effect: &Effect) -> ProviderError {
    ProviderError::Permanent(format!("{party} does not carry out {}", effect.purpose()))
}

#[async_trait]
impl Executor for PartyExecutor {
    fn party(&self) -> Party {
        self.party
    }

    async fn execute(
        &self,
        case: &CaseRecord,
        effect: &Effect,
        key: &str,
    ) -> Result<Outcome, ProviderError> {
        if effect.party() != self.party {
            return Err(mismatch(self.party, effect));
        }
        let p = &self.parties;
        let done = |result| Ok(Outcome::Done { result });
        match effect {
            Effect::Sms {
                purpose,
                template,
                params,
                text,
                ..
            } => {
                let message = SmsMessage {
                    idempotency_key: key.to_owned(),
                    phone: application(case)?.applicant.phone,
                    purpose: purpose.clone(),
                    template: template.clone(),
                    params: params.clone(),
                    text: text.clone(),
                };
                match p.sms.send(&message).await {
                    Ok(receipt) => done(json!({"provider_id": receipt.provider_id})),
                    // An invalid number: the answer is recorded (sms_failed), never retried.
                    Err(ProviderError::Permanent(reason)) => Ok(Outcome::Refused { reason }),
                    Err(e) => Err(e),
                }
            }
            Effect::PaymentOrder { amount_cny } => {
                let request = PaymentRequest {
                    idempotency_key: key.to_owned(),
                    case_id: case.case_id.clone(),
                    application_id: case.application_id.clone(),
                    amount_cny: *amount_cny,
                };
                let order = p.payment.create_order(&request).await?;
                done(json!({"gateway_order_id": order.gateway_order_id}))
            }
            Effect::ProductionOrder { document_kind } => {
                let order = ProductionOrder {
                    idempotency_key: key.to_owned(),
                    case_id: case.case_id.clone(),
                    application_id: case.application_id.clone(),
                    document_kind: document_kind.clone(),
                };
                let ack = p.production.place_order(&order).await?;
                done(json!({"centre_order_id": ack.centre_order_id}))
            }
            Effect::Shipment => {
                let app = application(case)?;
                let Delivery::Courier {
                    recipient,
                    phone,
                    address,
                } = app.delivery
                else {
                    return Err(ProviderError::Permanent(
                        "a shipment for an application that chose pickup".into(),
                    ));
                };
                let shipment = ShipmentRequest {
                    idempotency_key: key.to_owned(),
                    case_id: case.case_id.clone(),
                    application_id: case.application_id.clone(),
                    recipient,
                    phone,
                    address: format!(
                        "{}{}{}{}",
                        address.province, address.city, address.district, address.street
                    ),
                    postcode: address.postcode,
                };
                let booking = p.courier.book(&shipment).await?;
                done(json!({"waybill": booking.waybill}))
            }
            Effect::PickupNotice => {
                let notice = PickupNotice {
                    idempotency_key: key.to_owned(),
                    case_id: case.case_id.clone(),
                    application_id: case.application_id.clone(),
                    hukou_region: application(case)?.applicant.hukou_region,
                };
                let slot = p.hall.announce(&notice).await?;
                done(json!({"hall": slot.hall, "awaiting_arrival": slot.awaiting_arrival}))
            }
            Effect::ReviewAssignment {
                round,
                preferred_reviewer,
            } => {
                let task = ReviewTask {
                    idempotency_key: key.to_owned(),
                    case_id: case.case_id.clone(),
                    application_id: case.application_id.clone(),
                    hukou_region: application(case)?.applicant.hukou_region,
                    round: *round,
                    preferred_reviewer: preferred_reviewer.clone(),
                };
                let assignment = p.desk.assign(&task).await?;
                done(json!({"reviewer": assignment.reviewer}))
            }
        }
    }
}
