use tasker_worker::{HandlerError, HandlerOutput, StepContext, StepHandler};

/// Takes the sum of its parents' results (or the context's `value` for a root step) and
/// applies `initialization.operation` (`add`, `multiply`, `square`) with `operand`.
pub struct Compute;

#[async_trait::async_trait]
impl StepHandler for Compute {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let input = if step.dependency_results.is_empty() {
            step.task_context
                .get("value")
                .and_then(|v| v.as_i64())
                .ok_or_else(|| HandlerError::permanent("context has no integer 'value'"))?
        } else {
            let mut sum = 0i64;
            for (name, v) in &step.dependency_results {
                sum += v.as_i64().ok_or_else(|| {
                    HandlerError::permanent(format!("result of '{name}' is not an integer"))
                })?;
            }
            sum
        };
        let operand = step
            .initialization
            .get("operand")
            .and_then(|v| v.as_i64())
            .unwrap_or(0);
        let out = match step
            .initialization
            .get("operation")
            .and_then(|v| v.as_str())
        {
            Some("add") => input.checked_add(operand),
            Some("multiply") => input.checked_mul(operand),
            Some("square") => input.checked_mul(input),
            other => {
                return Err(HandlerError::permanent(format!(
                    "unknown operation {other:?}"
                )))
            }
        }
        .ok_or_else(|| HandlerError::permanent("arithmetic overflow"))?;
        Ok(HandlerOutput::new(serde_json::json!(out)))
    }
}
