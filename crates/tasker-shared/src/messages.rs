//! Queue message bodies. They carry identities, not payloads: the database holds the truth,
//! so a stale or duplicated message can always be recognised by comparing with it.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Sent to `worker_<namespace>_queue` when a step is enqueued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMessage {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub step_name: String,
    pub namespace: String,
    /// The attempt this enqueue is for (attempts already made + 1).
    pub attempt: i32,
}

/// Sent to the orchestration results queue once a worker has recorded a step's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepResultMessage {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    /// The attempt whose result was recorded; lets orchestration drop duplicates and stale ones.
    pub attempt: i32,
    pub success: bool,
    pub worker_id: String,
}

/// A domain event declared by a template's `publishes_events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainEvent {
    pub event_uuid: Uuid,
    pub name: String,
    pub namespace: String,
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub step_name: String,
    pub success: bool,
    pub payload: serde_json::Value,
    pub published_at: chrono::DateTime<chrono::Utc>,
}

/// A message body that could not be decoded: kept with its reason so it can be archived.
#[derive(Debug, thiserror::Error)]
#[error("malformed {kind} message: {reason}")]
pub struct MalformedMessage {
    pub kind: &'static str,
    pub reason: String,
}

impl StepMessage {
    pub fn decode(value: &serde_json::Value) -> Result<Self, MalformedMessage> {
        serde_json::from_value(value.clone()).map_err(|e| MalformedMessage {
            kind: "step",
            reason: e.to_string(),
        })
    }
}

impl StepResultMessage {
    pub fn decode(value: &serde_json::Value) -> Result<Self, MalformedMessage> {
        serde_json::from_value(value.clone()).map_err(|e| MalformedMessage {
            kind: "step result",
            reason: e.to_string(),
        })
    }
}
