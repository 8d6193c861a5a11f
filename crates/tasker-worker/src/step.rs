//! What a handler is given and what it may return.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::queue::QueueName;
use tasker_shared::result::StepOutcome;
use tasker_shared::template::EventDeclaration;
use uuid::Uuid;

/// Everything a handler needs to run one step, loaded when the step is claimed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepContext {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub step_name: String,
    pub namespace: String,
    pub task_name: String,
    pub task_version: String,
    pub attempt: i32,
    pub max_attempts: i32,
    pub handler_callable: String,
    /// The template's `handler.initialization`.
    pub initialization: serde_json::Value,
    pub inputs: serde_json::Value,
    /// The task's JSON context.
    pub task_context: serde_json::Value,
    /// Each parent's result, by step name.
    pub dependency_results: serde_json::Map<String, serde_json::Value>,
    pub timeout_seconds: Option<u64>,
}

impl StepContext {
    /// A parent's result; None for a step that is not a parent, or a branch a decision did
    /// not create.
    pub fn dependency_result(&self, step: &str) -> Option<&serde_json::Value> {
        self.dependency_results.get(step)
    }

    /// In a batch worker: its batch object, as the batchable step returned it.
    pub fn batch(&self) -> Option<&serde_json::Value> {
        self.inputs.get("batch")
    }

    /// In a convergence step: the results of `worker`'s copies (`<worker>_000`, `_001`, ...)
    /// in batch order; empty when no batches were created.
    pub fn batch_results(&self, worker: &str) -> Vec<&serde_json::Value> {
        let mut found: Vec<(u64, &serde_json::Value)> = self
            .dependency_results
            .iter()
            .filter_map(|(name, result)| {
                let index = name.strip_prefix(worker)?.strip_prefix('_')?;
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((index.parse().ok()?, result))
            })
            .collect();
        found.sort_by_key(|(i, _)| *i);
        found.into_iter().map(|(_, r)| r).collect()
    }
}

/// A claimed step travelling on the handler dispatch channel, with what the completion side
/// needs to record its result.
#[derive(Debug, Clone)]
pub struct DispatchedStep {
    /// Identifies this dispatch to a foreign-language poller (`complete(event_id, ...)`).
    pub event_id: Uuid,
    /// Shared, not copied, with whoever runs the handler (a foreign poller gets a handle).
    pub context: Arc<StepContext>,
    pub publishes_events: Vec<EventDeclaration>,
    pub queue: QueueName,
    pub dispatched_at: Instant,
    pub lease_expires_at: DateTime<Utc>,
}

impl DispatchedStep {
    /// The step's own timeout, else the configured default.
    pub fn timeout(&self, default: Duration) -> Duration {
        self.context
            .timeout_seconds
            .map(Duration::from_secs)
            .unwrap_or(default)
    }
}

/// A successful handler run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HandlerOutput {
    pub result: serde_json::Value,
    #[serde(default)]
    pub metadata: serde_json::Value,
    /// What a decision or batchable step decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<StepOutcome>,
}

impl HandlerOutput {
    pub fn new(result: serde_json::Value) -> Self {
        Self {
            result,
            metadata: serde_json::Value::Null,
            outcome: None,
        }
    }

    /// A decision step's choice among its direct dependents (none when empty).
    pub fn with_next_steps<S: Into<String>>(mut self, steps: impl IntoIterator<Item = S>) -> Self {
        self.outcome = Some(StepOutcome::NextSteps(
            steps.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// A batchable step's batches: one batch worker copy is created per object.
    pub fn with_batches(mut self, batches: Vec<serde_json::Value>) -> Self {
        self.outcome = Some(StepOutcome::Batches(batches));
        self
    }
}

/// `count` items cut into batches of `size`: `[{"batch_id": "000", "start_cursor": 0,
/// "end_cursor": size}, ...]`, the last one ending at `count`. Empty for no items.
pub fn batch_ranges(count: u64, size: u64) -> Vec<serde_json::Value> {
    let size = size.max(1);
    (0..count.div_ceil(size))
        .map(|i| {
            serde_json::json!({
                "batch_id": format!("{i:03}"),
                "start_cursor": i * size,
                "end_cursor": ((i + 1) * size).min(count),
            })
        })
        .collect()
}

/// A failed handler run, as the handler classifies it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandlerError {
    #[error("{message}")]
    Retryable {
        message: String,
        error_type: Option<String>,
        retry_after: Option<Duration>,
    },
    #[error("{message}")]
    Permanent {
        message: String,
        error_type: Option<String>,
    },
}

impl HandlerError {
    pub fn retryable(message: impl Into<String>) -> Self {
        HandlerError::Retryable {
            message: message.into(),
            error_type: None,
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError::Permanent {
            message: message.into(),
            error_type: None,
        }
    }

    pub fn with_retry_after(self, after: Duration) -> Self {
        match self {
            HandlerError::Retryable {
                message,
                error_type,
                ..
            } => HandlerError::Retryable {
                message,
                error_type,
                retry_after: Some(after),
            },
            other => other,
        }
    }

    pub fn with_error_type(self, t: impl Into<String>) -> Self {
        match self {
            HandlerError::Retryable {
                message,
                retry_after,
                ..
            } => HandlerError::Retryable {
                message,
                error_type: Some(t.into()),
                retry_after,
            },
            HandlerError::Permanent { message, .. } => HandlerError::Permanent {
                message,
                error_type: Some(t.into()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context(inputs: serde_json::Value, deps: serde_json::Value) -> StepContext {
        StepContext {
            task_uuid: Uuid::nil(),
            step_uuid: Uuid::nil(),
            step_name: "s".into(),
            namespace: "ns".into(),
            task_name: "t".into(),
            task_version: "1".into(),
            attempt: 1,
            max_attempts: 1,
            handler_callable: "X".into(),
            initialization: json!({}),
            inputs,
            task_context: json!({}),
            dependency_results: deps.as_object().unwrap().clone(),
            timeout_seconds: None,
        }
    }

    #[test]
    fn batch_ranges_cover_the_total_in_numbered_ranges() {
        assert_eq!(
            batch_ranges(250, 100),
            [
                json!({"batch_id": "000", "start_cursor": 0, "end_cursor": 100}),
                json!({"batch_id": "001", "start_cursor": 100, "end_cursor": 200}),
                json!({"batch_id": "002", "start_cursor": 200, "end_cursor": 250}),
            ]
        );
        assert!(batch_ranges(0, 10).is_empty());
        assert_eq!(batch_ranges(5, 0).len(), 5, "a zero size is taken as 1");
    }

    #[test]
    fn batch_and_batch_results_in_batch_order() {
        let c = context(
            json!({"batch": {"batch_id": "001"}}),
            json!({"w_010": 10, "w_002": 2, "w_000": 0, "w_x": 9, "wide_001": 1, "w_": 5}),
        );
        assert_eq!(c.batch(), Some(&json!({"batch_id": "001"})));
        let got: Vec<i64> = c
            .batch_results("w")
            .into_iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(got, [0, 2, 10]);
        assert!(c.batch_results("none").is_empty());
        assert_eq!(context(json!({}), json!({})).batch(), None);
    }

    #[test]
    fn outcomes_ride_on_the_handler_output() {
        let out = HandlerOutput::new(json!(1)).with_next_steps(["a", "b"]);
        assert_eq!(
            out.outcome,
            Some(StepOutcome::NextSteps(vec!["a".into(), "b".into()]))
        );
        let out = HandlerOutput::new(json!(1)).with_batches(vec![]);
        assert_eq!(out.outcome, Some(StepOutcome::Batches(vec![])));
        assert_eq!(HandlerOutput::new(json!(1)).outcome, None);
    }
}
