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

/// Makes the claim of any step named in its task's `poison` context field fail, as a claim
/// fails when a convergence step's parents' results are too large to gather into one value
/// (`program_limit_exceeded`), without writing hundreds of megabytes to get there.
const POISON_CLAIMS: &str = r#"
CREATE FUNCTION public.refuse_poisoned_claims() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.state = 'in_progress' AND OLD.state <> 'in_progress'
     AND EXISTS (SELECT 1 FROM tasker.tasks t
                  WHERE t.task_uuid = NEW.task_uuid AND t.context->'poison' ? NEW.name) THEN
    RAISE EXCEPTION 'total size of jsonb object elements exceeds the maximum of 268435455 bytes'
      USING ERRCODE = 'program_limit_exceeded';
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER refuse_poisoned_claims BEFORE UPDATE ON tasker.workflow_steps
  FOR EACH ROW EXECUTE FUNCTION public.refuse_poisoned_claims();
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_cannot_be_claimed_fails_alone_and_its_queue_goes_on() {
    let h = Harness::with_rust_worker(&[]).await;
    sqlx::raw_sql(POISON_CLAIMS)
        .execute(&h.db.pool)
        .await
        .unwrap();
    // A root (claimed from the queue, in a batch with the others' roots) and a child
    // (claimed by the recording of its parent's result, then from the queue).
    let root = h
        .create(
            "linear_workflow",
            "linear_math",
            serde_json::json!({"value": 1, "poison": ["add_two"]}),
        )
        .await;
    let child = h
        .create(
            "linear_workflow",
            "linear_math",
            serde_json::json!({"value": 1, "poison": ["triple"]}),
        )
        .await;
    let mut good = Vec::new();
    for value in 0..20 {
        good.push(
            h.create(
                "linear_workflow",
                "linear_math",
                serde_json::json!({ "value": value }),
            )
            .await,
        );
    }
    for task in good {
        assert_eq!(
            h.wait(task, Duration::from_secs(30)).await.state,
            "complete"
        );
    }
    for (task, step) in [(root, "add_two"), (child, "triple")] {
        assert_eq!(h.wait(task, Duration::from_secs(30)).await.state, "error");
        let row = StepRow::find_by_name(&h.db.pool, task, step)
            .await
            .unwrap()
            .expect("the step exists");
        assert_eq!(row.state, "error");
        let error = row.last_error.unwrap();
        assert_eq!(error["error_type"], "claim_failed", "{error}");
        assert_eq!(error["retryable"], false, "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("exceeds the maximum of 268435455 bytes"),
            "{error}"
        );
    }
    h.shutdown().await;
}
