//! What a handler is given and what it may return.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::queue::QueueName;
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
    pub fn dependency_result(&self, step: &str) -> Option<&serde_json::Value> {
        self.dependency_results.get(step)
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
    pub msg_id: i64,
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
}

impl HandlerOutput {
    pub fn new(result: serde_json::Value) -> Self {
        Self {
            result,
            metadata: serde_json::Value::Null,
        }
    }
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
