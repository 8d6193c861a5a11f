//! The approval routing example (config/tasks/approval_routing.yaml): a decision step and a
//! deferred convergence.

use serde_json::json;
use tasker_worker::{HandlerError, HandlerOutput, StepContext, StepHandler};

/// Chooses the approvals a request needs from its `amount`: none at 0 or below, then
/// auto_approve, manager_approval, or manager_approval and finance_review.
pub struct Route;

#[async_trait::async_trait]
impl StepHandler for Route {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let amount = step
            .task_context
            .get("amount")
            .and_then(|v| v.as_f64())
            .ok_or_else(|| HandlerError::permanent("context has no numeric 'amount'"))?;
        let (route, next): (&str, &[&str]) = if amount <= 0.0 {
            ("rejected", &[])
        } else if amount < 1000.0 {
            ("auto", &["auto_approve"])
        } else if amount < 10000.0 {
            ("manager", &["manager_approval"])
        } else {
            (
                "manager_and_finance",
                &["manager_approval", "finance_review"],
            )
        };
        Ok(HandlerOutput::new(json!({ "route": route })).with_next_steps(next.iter().copied()))
    }
}

/// One approval, by `initialization.approver`.
pub struct Approve;

#[async_trait::async_trait]
impl StepHandler for Approve {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let approver = step
            .initialization
            .get("approver")
            .and_then(|v| v.as_str())
            .ok_or_else(|| HandlerError::permanent("initialization has no 'approver'"))?;
        Ok(HandlerOutput::new(json!({ "approved_by": approver })))
    }
}

/// Approved when at least one approval ran; lists them in template order.
pub struct Finalize;

#[async_trait::async_trait]
impl StepHandler for Finalize {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let approvals: Vec<&serde_json::Value> =
            ["auto_approve", "manager_approval", "finance_review"]
                .iter()
                .filter_map(|name| step.dependency_result(name))
                .map(|r| &r["approved_by"])
                .collect();
        let route = step
            .dependency_result("route")
            .map(|r| r["route"].clone())
            .unwrap_or_default();
        Ok(HandlerOutput::new(json!({
            "approved": !approvals.is_empty(),
            "approvals": approvals,
            "route": route,
        })))
    }
}
