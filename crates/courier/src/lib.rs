//! Courier dispatch: a produced document either ships by courier — booked with postage paid by the
//! recipient on delivery (到付), our case as the idempotency key, the waybill recorded — or waits at
//! the exit-entry hall of the household registration's district. Courier and hall reports finish
//! the case; a failed or returned delivery is recorded for an operator, never dropped.

use async_trait::async_trait;
use serde_json::{Value, json};
use std::sync::Arc;
use wangban_domain::application::Delivery;
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_providers::{Courier, PickupHall, PickupNotice, ShipmentRequest};
use wangban_runtime::{Cx, Handler, HandlerError};

/// The courier dispatch worker.
pub struct Dispatch {
    pub courier: Arc<dyn Courier>,
    pub hall: Arc<dyn PickupHall>,
}

impl Dispatch {
    async fn produced(&self, cx: &mut Cx<'_>) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        let app = Cx::application(&case)?;
        let step = match app.delivery {
            Delivery::Courier { .. } => Step::Ship,
            Delivery::Pickup => Step::AnnouncePickup,
        };
        if case.state != State::Produced {
            cx.step(&mut case, step, json!({})).await?;
            return Ok(());
        }
        match &app.delivery {
            Delivery::Courier {
                recipient,
                phone,
                address,
            } => {
                let shipment = ShipmentRequest {
                    idempotency_key: format!("{}:shipment", case.case_id),
                    case_id: case.case_id.clone(),
                    recipient: recipient.clone(),
                    phone: phone.clone(),
                    address: format!(
                        "{}{}{}{}",
                        address.province, address.city, address.district, address.street
                    ),
                    postcode: address.postcode.clone(),
                };
                let booking = self.courier.book(&shipment).await?;
                let d = json!({"waybill": booking.waybill, "postage": "到付"});
                cx.tx().record_effect(&case.case_id, "shipment", &d).await?;
                cx.step(&mut case, Step::Ship, d).await?;
            }
            Delivery::Pickup => {
                let notice = PickupNotice {
                    idempotency_key: format!("{}:pickup", case.case_id),
                    case_id: case.case_id.clone(),
                    hukou_region: app.applicant.hukou_region.clone(),
                };
                let slot = self.hall.announce(&notice).await?;
                let d = json!({"hall": slot.hall});
                cx.tx()
                    .record_effect(&case.case_id, "pickup_notice", &d)
                    .await?;
                cx.step(&mut case, Step::AnnouncePickup, d).await?;
            }
        }
        Ok(())
    }

    async fn courier_reported(
        &self,
        cx: &mut Cx<'_>,
        event: &Envelope,
    ) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        let status = event
            .data
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("");
        let waybill = event.data.get("waybill").cloned().unwrap_or(Value::Null);
        match status {
            "delivered" => {
                cx.step(&mut case, Step::Deliver, json!({"waybill": waybill})).await?;
            }
            "picked_up" | "in_transit" => {
                cx.audit(&case, "courier_status", json!({"status": status, "waybill": waybill})).await?;
            }
            "failed_delivery" | "returned" => {
                // For the operators' queue: the case stays shipped until someone acts.
                cx.audit(&case, "delivery_problem", json!({"status": status, "waybill": waybill})).await?;
            }
            _ => return Err(HandlerError::Permanent("courier status is not one of picked_up, in_transit, delivered, failed_delivery, returned".into())),
        }
        Ok(())
    }

    async fn pickup_reported(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        match event.data.get("status").and_then(Value::as_str) {
            Some("collected") => {
                cx.step(&mut case, Step::Collect, json!({})).await?;
                Ok(())
            }
            _ => Err(HandlerError::Permanent(
                "pickup status must be `collected`".into(),
            )),
        }
    }
}

#[async_trait]
impl Handler for Dispatch {
    fn worker(&self) -> &'static str {
        "courier"
    }

    fn bindings(&self) -> Vec<String> {
        [
            EventType::Entered(State::Produced),
            EventType::CourierReported,
            EventType::PickupReported,
        ]
        .iter()
        .map(|t| t.routing_key())
        .collect()
    }

    async fn handle(&self, cx: &mut Cx<'_>, event: &Envelope) -> Result<(), HandlerError> {
        match event.kind() {
            Some(EventType::Entered(State::Produced)) => self.produced(cx).await,
            Some(EventType::CourierReported) => self.courier_reported(cx, event).await,
            Some(EventType::PickupReported) => self.pickup_reported(cx, event).await,
            _ => Err(HandlerError::Permanent(format!(
                "courier does not handle {}",
                event.event_type
            ))),
        }
    }
}
