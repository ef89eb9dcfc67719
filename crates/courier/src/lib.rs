//! Courier dispatch: a produced document either ships by courier — booked with postage paid by the
//! recipient on delivery (到付), our case as the idempotency key, the waybill recorded — or waits at
//! the exit-entry hall of the household registration's district. Courier and hall reports finish
//! the case; a failed or returned delivery is recorded for an operator, never dropped.

use async_trait::async_trait;
use serde_json::{Value, json};
use wangban_domain::application::Delivery;
use wangban_domain::effects::{Effect, EffectReport, Party};
use wangban_domain::events::{Envelope, EventType};
use wangban_domain::lifecycle::{State, Step};
use wangban_runtime::{Cx, Handler, HandlerError};

/// The courier dispatch worker. It asks for the booking or the pickup notice; the courier's and
/// the hall's executors carry them out after the commit, and their answers move the case.
pub struct Dispatch;

impl Dispatch {
    /// A produced document: book the courier or tell the hall, as the application chose.
    async fn produced(&self, cx: &mut Cx<'_>) -> Result<(), HandlerError> {
        let mut case = cx.case().await?;
        let app = Cx::application(&case)?;
        let (step, effect) = match app.delivery {
            Delivery::Courier { .. } => (Step::Ship, Effect::Shipment),
            Delivery::Pickup => (Step::AnnouncePickup, Effect::PickupNotice),
        };
        if case.state != State::Produced {
            cx.step(&mut case, step, json!({})).await?;
            return Ok(());
        }
        cx.request(&case, &effect).await?;
        Ok(())
    }

    /// The courier booked the shipment (a waybill), or the hall took the document (which hall).
    async fn dispatched(&self, cx: &mut Cx<'_>, report: &EffectReport) -> Result<(), HandlerError> {
        let (step, purpose, d) = match report.command {
            Effect::Shipment => {
                let waybill = report.text("waybill").map_err(HandlerError::Permanent)?;
                (
                    Step::Ship,
                    "shipment",
                    json!({"waybill": waybill, "postage": "到付"}),
                )
            }
            Effect::PickupNotice => {
                let hall = report.text("hall").map_err(HandlerError::Permanent)?;
                (Step::AnnouncePickup, "pickup_notice", json!({"hall": hall}))
            }
            _ => {
                return Err(HandlerError::Permanent(format!(
                    "courier asked for no effect {}",
                    report.purpose
                )));
            }
        };
        let mut case = cx.case().await?;
        if case.state == State::Produced {
            cx.tx().record_effect(&case.case_id, purpose, &d).await?;
        }
        cx.step(&mut case, step, d).await?;
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
            EventType::EffectDone(Party::Courier),
            EventType::EffectDone(Party::Hall),
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
            Some(EventType::EffectDone(Party::Courier | Party::Hall)) => {
                self.dispatched(cx, &Cx::report(event)?).await
            }
            _ => Err(HandlerError::Permanent(format!(
                "courier does not handle {}",
                event.event_type
            ))),
        }
    }
}
