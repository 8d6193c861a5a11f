//! The order-fulfillment example. Every figure derives from the order's items, so the
//! results are known in advance: total = sum(quantity * price).

use serde_json::{json, Value};
use tasker_worker::{HandlerError, HandlerOutput, StepContext, StepHandler};

fn items(step: &StepContext) -> Result<&Vec<Value>, HandlerError> {
    step.task_context
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| HandlerError::permanent("order has no items"))
}

pub struct ValidateOrder;

#[async_trait::async_trait]
impl StepHandler for ValidateOrder {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let items = items(step)?;
        let max = step
            .initialization
            .get("max_items")
            .and_then(Value::as_u64)
            .unwrap_or(100) as usize;
        if items.len() > max {
            return Err(HandlerError::permanent(format!(
                "order has {} items; at most {max} allowed",
                items.len()
            )));
        }
        let mut total = 0.0;
        let mut count = 0;
        for item in items {
            let q = item.get("quantity").and_then(Value::as_i64).unwrap_or(0);
            let p = item.get("price").and_then(Value::as_f64).unwrap_or(0.0);
            if q <= 0 {
                return Err(
                    HandlerError::permanent("every item needs a positive quantity")
                        .with_error_type("validation_error"),
                );
            }
            total += q as f64 * p;
            count += q;
        }
        let order_id = step
            .task_context
            .get("order_id")
            .cloned()
            .unwrap_or(Value::Null);
        Ok(HandlerOutput::new(
            json!({ "order_id": order_id, "item_count": count, "total": round2(total) }),
        ))
    }
}

pub struct ReserveInventory;

#[async_trait::async_trait]
impl StepHandler for ReserveInventory {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let reserved: Vec<Value> = items(step)?
            .iter()
            .map(|i| json!({ "sku": i.get("sku"), "quantity": i.get("quantity") }))
            .collect();
        Ok(HandlerOutput::new(json!({ "reserved": reserved })))
    }
}

pub struct ChargePayment;

#[async_trait::async_trait]
impl StepHandler for ChargePayment {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let total = step
            .dependency_result("validate_order")
            .and_then(|v| v.get("total"))
            .and_then(Value::as_f64)
            .ok_or_else(|| HandlerError::permanent("validate_order result has no total"))?;
        let currency = step
            .initialization
            .get("currency")
            .and_then(Value::as_str)
            .unwrap_or("USD");
        let order_id = step
            .task_context
            .get("order_id")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok(HandlerOutput::new(
            json!({ "charge_id": format!("ch_{order_id}"), "amount": total, "currency": currency }),
        ))
    }
}

pub struct ShipOrder;

#[async_trait::async_trait]
impl StepHandler for ShipOrder {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let charge = step
            .dependency_result("charge_payment")
            .and_then(|v| v.get("charge_id"))
            .and_then(Value::as_str)
            .ok_or_else(|| HandlerError::permanent("order was not charged"))?;
        let order_id = step
            .task_context
            .get("order_id")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok(HandlerOutput::new(
            json!({ "tracking_number": format!("TRK{order_id:08}"), "charge_id": charge, "status": "shipped" }),
        ))
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
