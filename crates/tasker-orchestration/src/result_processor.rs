//! Consumes the orchestration results queue: each result moves its step to complete,
//! waiting_for_retry (with backoff) or error, then the task is finalized, and the message is
//! deleted, all in one transaction. Duplicate and stale messages change nothing.

use crate::OrchestrationError;
use chrono::Utc;
use rand::Rng;
use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::config::BackoffConfig;
use tasker_shared::messages::StepResultMessage;
use tasker_shared::models::transition_step;
use tasker_shared::queue::{worker_queue, QueueClient, QueueName, QueuedMessage};
use tasker_shared::state::StepState;
use tasker_shared::template::{BackoffKind, ResolvedRetry};
use tasker_shared::StepError;

/// What became of one result message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultOutcome {
    Completed,
    RetryScheduled,
    Failed,
    /// A duplicate, or a result for an attempt that is no longer current.
    Ignored,
    /// The body could not be decoded; archived.
    Malformed,
}

#[derive(Clone)]
pub struct ResultProcessor {
    pool: PgPool,
    queues: QueueClient,
    queue: QueueName,
    backoff: BackoffConfig,
    actor: String,
}

#[derive(sqlx::FromRow)]
struct StepForResult {
    state: String,
    attempts: i32,
    max_attempts: i32,
    retryable: bool,
    backoff: String,
    backoff_base_ms: i64,
    max_backoff_ms: i64,
    last_error: Option<serde_json::Value>,
}

impl ResultProcessor {
    pub fn new(
        pool: PgPool,
        queues: QueueClient,
        queue: QueueName,
        backoff: BackoffConfig,
        actor: String,
    ) -> Self {
        Self {
            pool,
            queues,
            queue,
            backoff,
            actor,
        }
    }

    pub fn queue(&self) -> &QueueName {
        &self.queue
    }

    /// Handles one message. On a database error nothing is committed and the message
    /// reappears after its visibility timeout.
    pub async fn process(
        &self,
        message: &QueuedMessage,
    ) -> Result<ResultOutcome, OrchestrationError> {
        let result = match StepResultMessage::decode(&message.message) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(msg_id = message.msg_id, error = %e, "archiving malformed result message");
                self.queues.archive(&self.queue, message.msg_id).await?;
                metrics::counter!("tasker_results_total", "outcome" => "malformed").increment(1);
                return Ok(ResultOutcome::Malformed);
            }
        };
        let mut tx = self.pool.begin().await?;
        // Task first, then step: the same lock order as finalize_task.
        let namespace: Option<String> = sqlx::query_scalar(
            "SELECT n.name FROM tasker.tasks t
               JOIN tasker.named_tasks nt USING (named_task_uuid)
               JOIN tasker.namespaces n USING (namespace_uuid)
              WHERE t.task_uuid = $1 FOR UPDATE OF t",
        )
        .bind(result.task_uuid)
        .fetch_optional(&mut *tx)
        .await?;
        let step: Option<StepForResult> = sqlx::query_as(
            "SELECT state, attempts, max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, last_error
               FROM tasker.workflow_steps WHERE step_uuid = $1 AND task_uuid = $2 FOR UPDATE",
        )
        .bind(result.step_uuid)
        .bind(result.task_uuid)
        .fetch_optional(&mut *tx)
        .await?;
        let outcome = match step {
            Some(step) if step.attempts == result.attempt => {
                self.apply(&mut tx, &result, &step).await?
            }
            _ => ResultOutcome::Ignored,
        };
        if outcome == ResultOutcome::Ignored {
            tracing::debug!(step = %result.step_uuid, attempt = result.attempt, "ignoring duplicate or stale result");
        } else {
            sqlx::query("SELECT tasker.finalize_task($1, $2)")
                .bind(result.task_uuid)
                .bind(&self.actor)
                .execute(&mut *tx)
                .await?;
        }
        self.queues
            .delete(&self.queue, message.msg_id, &mut *tx)
            .await?;
        tx.commit().await?;
        // Finalizing may have enqueued children: wake the namespace's workers.
        if outcome != ResultOutcome::Ignored {
            if let Some(queue) = namespace.and_then(|ns| worker_queue(&ns).ok()) {
                self.queues.notify(&queue);
            }
        }
        let label = match outcome {
            ResultOutcome::Completed => "completed",
            ResultOutcome::RetryScheduled => "retry_scheduled",
            ResultOutcome::Failed => "failed",
            ResultOutcome::Ignored => "ignored",
            ResultOutcome::Malformed => "malformed",
        };
        metrics::counter!("tasker_results_total", "outcome" => label).increment(1);
        Ok(outcome)
    }

    async fn apply(
        &self,
        tx: &mut sqlx::PgConnection,
        result: &StepResultMessage,
        step: &StepForResult,
    ) -> Result<ResultOutcome, OrchestrationError> {
        let state: StepState = step
            .state
            .parse()
            .map_err(tasker_shared::models::StoreError::from)?;
        let meta = serde_json::json!({ "attempt": result.attempt, "worker_id": result.worker_id });
        match state {
            StepState::EnqueuedForOrchestration => {
                transition_step(
                    &mut *tx,
                    result.step_uuid,
                    state,
                    StepState::Complete,
                    &self.actor,
                    meta,
                )
                .await?;
                sqlx::query("UPDATE tasker.workflow_steps SET completed_at = clock_timestamp() WHERE step_uuid = $1")
                    .bind(result.step_uuid)
                    .execute(&mut *tx)
                    .await?;
                Ok(ResultOutcome::Completed)
            }
            StepState::EnqueuedAsErrorForOrchestration => {
                let error: Option<StepError> = step
                    .last_error
                    .as_ref()
                    .and_then(|e| serde_json::from_value(e.clone()).ok());
                let handler_retryable = error.as_ref().map(|e| e.retryable).unwrap_or(true);
                if handler_retryable && step.retryable && step.attempts < step.max_attempts {
                    let delay = self.retry_delay(step, error.as_ref());
                    transition_step(
                        &mut *tx,
                        result.step_uuid,
                        state,
                        StepState::WaitingForRetry,
                        &self.actor,
                        serde_json::json!({
                            "attempt": result.attempt, "retry_in_ms": delay.as_millis() as u64,
                        }),
                    )
                    .await?;
                    sqlx::query(
                        "UPDATE tasker.workflow_steps SET next_retry_at = $2 WHERE step_uuid = $1",
                    )
                    .bind(result.step_uuid)
                    .bind(Utc::now() + delay)
                    .execute(&mut *tx)
                    .await?;
                    Ok(ResultOutcome::RetryScheduled)
                } else {
                    let reason = if !handler_retryable {
                        "not retryable (handler)"
                    } else if !step.retryable {
                        "not retryable (template)"
                    } else {
                        "out of attempts"
                    };
                    transition_step(
                        &mut *tx,
                        result.step_uuid,
                        state,
                        StepState::Error,
                        &self.actor,
                        serde_json::json!({
                            "attempt": result.attempt, "reason": reason,
                        }),
                    )
                    .await?;
                    sqlx::query("UPDATE tasker.workflow_steps SET completed_at = clock_timestamp() WHERE step_uuid = $1")
                        .bind(result.step_uuid)
                        .execute(&mut *tx)
                        .await?;
                    Ok(ResultOutcome::Failed)
                }
            }
            _ => Ok(ResultOutcome::Ignored),
        }
    }

    /// The handler's retry-after hint (capped) wins; otherwise the step's backoff plus jitter.
    fn retry_delay(&self, step: &StepForResult, error: Option<&StepError>) -> Duration {
        if let Some(ms) = error.and_then(|e| e.retry_after_ms) {
            return Duration::from_millis(ms.min(self.backoff.max_retry_after_ms));
        }
        let policy = ResolvedRetry {
            retryable: step.retryable,
            max_attempts: step.max_attempts as u32,
            backoff: match step.backoff.as_str() {
                "none" => BackoffKind::None,
                "linear" => BackoffKind::Linear,
                _ => BackoffKind::Exponential,
            },
            backoff_base_ms: step.backoff_base_ms as u64,
            max_backoff_ms: step.max_backoff_ms as u64,
        };
        let base = policy.base_delay_ms(step.attempts as u32);
        let spread = (base as f64 * self.backoff.jitter_ratio) as u64;
        let jitter = if spread > 0 {
            rand::rng().random_range(0..=spread)
        } else {
            0
        };
        Duration::from_millis(base + jitter)
    }
}
