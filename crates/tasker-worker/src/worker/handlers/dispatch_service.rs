//! HandlerDispatchService: takes claimed steps off the dispatch channel and runs their Rust
//! handlers, at most `max_concurrent_handlers` at once, each under its timeout, with panics
//! caught. Every run ends in a result on the completion channel; the permit is released
//! before that send, so a full completion channel never holds handler capacity.

use super::registry::HandlerRegistry;
use crate::step::{DispatchedStep, HandlerError};
use crate::worker::worker_metrics as m;
use chrono::Utc;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::result::{ErrorType, ExecutionMetadata, StepError, StepExecutionResult};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

/// A handler result on its way to be recorded.
#[derive(Debug, Clone)]
pub struct CompletedStep {
    pub step: DispatchedStep,
    pub result: StepExecutionResult,
}

/// Called once a step's result has been recorded: the hook domain events hang on.
#[async_trait::async_trait]
pub trait PostHandlerCallback: Send + Sync + 'static {
    async fn on_handler_complete(&self, step: &DispatchedStep, result: &StepExecutionResult);
    fn name(&self) -> &str;
}

pub struct HandlerDispatchService {
    receiver: mpsc::Receiver<DispatchedStep>,
    completions: mpsc::Sender<CompletedStep>,
    registry: Arc<HandlerRegistry>,
    semaphore: Arc<Semaphore>,
    default_timeout: Duration,
    worker_id: String,
    abandon: CancellationToken,
}

impl HandlerDispatchService {
    pub fn new(
        receiver: mpsc::Receiver<DispatchedStep>,
        completions: mpsc::Sender<CompletedStep>,
        registry: Arc<HandlerRegistry>,
        semaphore: Arc<Semaphore>,
        default_timeout: Duration,
        worker_id: String,
    ) -> Self {
        Self {
            receiver,
            completions,
            registry,
            semaphore,
            default_timeout,
            worker_id,
            abandon: CancellationToken::new(),
        }
    }

    /// Cancelling this token abandons running handlers: their futures are dropped and no
    /// result is sent (shutdown hands their steps back instead).
    pub fn abandon_token(&self) -> CancellationToken {
        self.abandon.clone()
    }

    /// Runs until the dispatch channel closes, then waits for the handlers it started.
    pub async fn run(mut self) {
        let limit = self.semaphore.available_permits() as u32;
        let worker_id: Arc<str> = Arc::from(self.worker_id.as_str());
        while let Some(step) = self.receiver.recv().await {
            let permit = match self.semaphore.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => {
                    // The semaphore was closed: say so in a result instead of going silent.
                    let result = failure(
                        &step,
                        StepError::new(
                            ErrorType::SemaphoreAcquisitionFailed,
                            "handler semaphore closed",
                        ),
                        Utc::now(),
                        Instant::now(),
                        &worker_id,
                    );
                    let _ = self.completions.send(CompletedStep { step, result }).await;
                    continue;
                }
            };
            metrics::gauge!(m::PERMITS_AVAILABLE).set(self.semaphore.available_permits() as f64);
            m::record_channel(
                m::COMPLETION_DEPTH,
                m::COMPLETION_SATURATION,
                &self.completions,
            );
            let registry = self.registry.clone();
            let completions = self.completions.clone();
            let timeout = step.timeout(self.default_timeout);
            let worker_id = worker_id.clone();
            let abandon = self.abandon.clone();
            tokio::spawn(async move {
                metrics::gauge!(m::HANDLERS_IN_FLIGHT).increment(1.0);
                let outcome = tokio::select! {
                    r = execute(&registry, &step, timeout, &worker_id) => Some(r),
                    _ = abandon.cancelled() => None,
                };
                metrics::gauge!(m::HANDLERS_IN_FLIGHT).decrement(1.0);
                drop(permit);
                let Some(result) = outcome else { return };
                if completions
                    .send(CompletedStep { step, result })
                    .await
                    .is_err()
                {
                    tracing::error!("completion channel closed; result not recorded");
                }
            });
        }
        // Every permit back means every handler this service started has finished.
        let _ = self.semaphore.acquire_many(limit).await;
    }
}

/// Runs one handler and turns every way it can end into a result.
pub async fn execute(
    registry: &HandlerRegistry,
    step: &DispatchedStep,
    timeout: Duration,
    worker_id: &str,
) -> StepExecutionResult {
    let started_at = Utc::now();
    let start = Instant::now();
    let Some(handler) = registry.get(&step.context.handler_callable) else {
        return failure(
            step,
            StepError::new(
                ErrorType::HandlerNotFound,
                format!(
                    "no handler registered for callable '{}' (step '{}')",
                    step.context.handler_callable, step.context.step_name
                ),
            ),
            started_at,
            start,
            worker_id,
        );
    };
    let run = AssertUnwindSafe(handler.call(&step.context)).catch_unwind();
    let outcome = tokio::time::timeout(timeout, run).await;
    let elapsed = start.elapsed();
    metrics::histogram!(m::HANDLER_DURATION).record(elapsed.as_secs_f64());
    match outcome {
        Err(_) => failure(
            step,
            StepError::new(
                ErrorType::HandlerTimeout,
                format!(
                    "handler for step '{}' exceeded its timeout of {} ms",
                    step.context.step_name,
                    timeout.as_millis()
                ),
            ),
            started_at,
            start,
            worker_id,
        ),
        Ok(Err(panic)) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".into());
            failure(
                step,
                StepError::new(ErrorType::HandlerPanic, format!("handler panicked: {what}")),
                started_at,
                start,
                worker_id,
            )
        }
        Ok(Ok(Ok(output))) => {
            metrics::counter!(m::RESULTS, "error_type" => "none").increment(1);
            StepExecutionResult::success(
                step.context.step_uuid,
                output.result,
                metadata(started_at, start, worker_id, output.metadata),
            )
            .with_outcome(output.outcome)
        }
        Ok(Ok(Err(e))) => failure(step, handler_error(e), started_at, start, worker_id),
    }
}

/// How a handler's own error is recorded.
pub fn handler_error(e: HandlerError) -> StepError {
    match e {
        HandlerError::Retryable {
            message,
            error_type,
            retry_after,
        } => StepError {
            error_type: error_type
                .as_deref()
                .map(ErrorType::from)
                .unwrap_or(ErrorType::HandlerError),
            message,
            retryable: true,
            error_class: None,
            backtrace: None,
            retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
        },
        HandlerError::Permanent {
            message,
            error_type,
        } => StepError {
            error_type: error_type
                .as_deref()
                .map(ErrorType::from)
                .unwrap_or(ErrorType::HandlerError),
            message,
            retryable: false,
            error_class: None,
            backtrace: None,
            retry_after_ms: None,
        },
    }
}

pub fn metadata(
    started_at: chrono::DateTime<Utc>,
    start: Instant,
    worker_id: &str,
    custom: serde_json::Value,
) -> ExecutionMetadata {
    ExecutionMetadata {
        execution_time_ms: start.elapsed().as_millis() as u64,
        worker_id: worker_id.to_string(),
        started_at,
        completed_at: Utc::now(),
        custom,
    }
}

pub fn failure(
    step: &DispatchedStep,
    error: StepError,
    started_at: chrono::DateTime<Utc>,
    start: Instant,
    worker_id: &str,
) -> StepExecutionResult {
    metrics::counter!(m::RESULTS, "error_type" => error.error_type.as_str().to_string())
        .increment(1);
    StepExecutionResult::failure(
        step.context.step_uuid,
        error,
        metadata(started_at, start, worker_id, serde_json::Value::Null),
    )
}
