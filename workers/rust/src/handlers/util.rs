use std::time::Duration;
use tasker_worker::{HandlerError, HandlerOutput, StepContext, StepHandler};

/// Does nothing; for throughput benchmarks.
pub struct Noop;

#[async_trait::async_trait]
impl StepHandler for Noop {
    async fn call(&self, _step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Ok(HandlerOutput::new(serde_json::Value::Null))
    }
}

/// Sleeps `initialization.ms` milliseconds (context `sleep_ms` wins), then returns them.
pub struct Sleep;

#[async_trait::async_trait]
impl StepHandler for Sleep {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let ms = step
            .task_context
            .get("sleep_ms")
            .or_else(|| step.initialization.get("ms"))
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(HandlerOutput::new(serde_json::json!({ "slept_ms": ms })))
    }
}
