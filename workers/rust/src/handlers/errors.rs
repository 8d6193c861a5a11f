use tasker_worker::{HandlerError, HandlerOutput, StepContext, StepHandler};

/// Fails (retryably) until its attempt number exceeds `initialization.fail_times`; then
/// returns the context's `value` (or 1).
pub struct Flaky;

#[async_trait::async_trait]
impl StepHandler for Flaky {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let fail_times = step
            .initialization
            .get("fail_times")
            .and_then(|v| v.as_i64())
            .unwrap_or(1);
        if i64::from(step.attempt) <= fail_times {
            return Err(HandlerError::retryable(format!(
                "flaky failure on attempt {}",
                step.attempt
            )));
        }
        Ok(HandlerOutput::new(
            step.task_context
                .get("value")
                .cloned()
                .unwrap_or(serde_json::json!(1)),
        ))
    }
}

pub struct AlwaysFails;

#[async_trait::async_trait]
impl StepHandler for AlwaysFails {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Err(
            HandlerError::retryable(format!("always fails (attempt {})", step.attempt))
                .with_error_type("always_fails"),
        )
    }
}

pub struct PermanentFailure;

#[async_trait::async_trait]
impl StepHandler for PermanentFailure {
    async fn call(&self, _step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Err(HandlerError::permanent("this failure cannot be retried")
            .with_error_type("validation_error"))
    }
}

pub struct Panics;

#[async_trait::async_trait]
impl StepHandler for Panics {
    async fn call(&self, step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        panic!("handler for '{}' panicked on purpose", step.step_name)
    }
}

/// Kills its own worker process with SIGKILL, as an out-of-memory kill or a segfault in a
/// handler would: a poison step. Used by tests of what a lost worker costs a step
/// (tests/fixtures/templates/kills_its_worker.yaml); no example template calls it.
pub struct KillsItsWorker;

#[async_trait::async_trait]
impl StepHandler for KillsItsWorker {
    async fn call(&self, _step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        Err(HandlerError::permanent(format!(
            "could not kill the worker process: {killed:?}"
        )))
    }
}
