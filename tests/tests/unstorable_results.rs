//! Results Tasker cannot store as they are (a NUL character in text, nesting deeper than 64
//! levels, more than `max_payload_bytes`) are stored in a form it can, at once: a failure
//! with the characters replaced, a success as a permanent `invalid_result` failure naming
//! the problem. None is retried until the recording deadline and dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::models::StepRow;
use tasker_tests::{toml_value::Value as Toml, Harness};
use tasker_worker::{
    Dispatch, HandlerError, HandlerOutput, HandlerRegistry, StepContext, StepHandler,
};

/// Fails for good with a NUL in its message, error type and metadata.
struct FailsWithNul;

#[async_trait::async_trait]
impl StepHandler for FailsWithNul {
    async fn call(&self, _step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Err(HandlerError::permanent("card\0declined").with_error_type("gateway\0error"))
    }
}

/// Succeeds with a NUL in its result.
struct SucceedsWithNul;

#[async_trait::async_trait]
impl StepHandler for SucceedsWithNul {
    async fn call(&self, _step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Ok(HandlerOutput::new(serde_json::json!({ "note": "a\0b" })))
    }
}

/// Succeeds with whatever result it was built with.
struct Returns(serde_json::Value);

#[async_trait::async_trait]
impl StepHandler for Returns {
    async fn call(&self, _step: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Ok(HandlerOutput::new(self.0.clone()))
    }
}

async fn first_step_after(h: &Harness, handler: Arc<HandlerRegistry>) -> (StepRow, Duration) {
    let _worker = h.start_worker(Dispatch::Rust(handler)).await;
    let started = Instant::now();
    let task = h
        .create(
            "linear_workflow",
            "linear_math",
            serde_json::json!({"value": 1}),
        )
        .await;
    let done = h.wait(task, Duration::from_secs(30)).await;
    assert_eq!(done.state, "error");
    let step = StepRow::find_by_name(&h.db.pool, task, "add_two")
        .await
        .unwrap()
        .expect("the step exists");
    (step, started.elapsed())
}

#[tokio::test]
async fn a_failure_with_a_nul_is_stored_with_it_replaced_at_once() {
    let h = Harness::orchestration_only(&[]).await;
    let mut registry = HandlerRegistry::new();
    registry.register("Examples::Math::Compute", FailsWithNul);
    let (step, took) = first_step_after(&h, Arc::new(registry)).await;
    assert_eq!(step.state, "error");
    let error = step.last_error.unwrap();
    assert_eq!(error["message"], "card\u{FFFD}declined", "{error}");
    assert_eq!(error["error_type"], "gateway\u{FFFD}error");
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}: retried, not cleaned"
    );
}

#[tokio::test]
async fn a_success_with_a_nul_becomes_an_invalid_result_failure() {
    let h = Harness::orchestration_only(&[]).await;
    let mut registry = HandlerRegistry::new();
    registry.register("Examples::Math::Compute", SucceedsWithNul);
    let (step, _) = first_step_after(&h, Arc::new(registry)).await;
    let error = step.last_error.unwrap();
    assert_eq!(error["error_type"], "invalid_result", "{error}");
    assert_eq!(error["retryable"], false, "{error}");
    assert_eq!(
        error["message"],
        "the handler's result cannot be stored: result.note: contains a NUL character (\\u0000), which Postgres cannot store"
    );
    assert_eq!(step.attempts, 1, "refused for good, not retried");
}

async fn invalid_result_of(h: &Harness, result: serde_json::Value) -> (StepRow, String) {
    let mut registry = HandlerRegistry::new();
    registry.register("Examples::Math::Compute", Returns(result));
    let (step, _) = first_step_after(h, Arc::new(registry)).await;
    assert_eq!(step.state, "error");
    assert_eq!(step.attempts, 1, "refused for good, not retried");
    let error = step.last_error.clone().unwrap();
    assert_eq!(error["error_type"], "invalid_result", "{error}");
    (step, error["message"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn a_result_nested_deeper_than_64_levels_is_an_invalid_result() {
    let h = Harness::orchestration_only(&[]).await;
    let deep = (0..65).fold(serde_json::json!(1), |inner, _| serde_json::json!([inner]));
    let (_, message) = invalid_result_of(&h, deep).await;
    assert_eq!(
        message,
        format!(
            "the handler's result cannot be stored: result{}: nested deeper than 64 levels",
            "[0]".repeat(64)
        )
    );
}

#[tokio::test]
async fn a_result_over_max_payload_bytes_is_an_invalid_result() {
    let h = Harness::orchestration_only(&[("worker.max_payload_bytes", Toml::Integer(4096))]).await;
    let (_, message) =
        invalid_result_of(&h, serde_json::json!({ "blob": "x".repeat(10_000) })).await;
    assert!(
        message.contains("more than max_payload_bytes (4096)"),
        "{message}"
    );
}
