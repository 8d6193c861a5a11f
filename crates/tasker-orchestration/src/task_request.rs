//! What a caller asks of the [`TaskInitializer`](crate::TaskInitializer), and what it answers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Tasks created, by namespace.
pub const TASKS_CREATED: &str = "tasker_tasks_created_total";

/// What a caller asks for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskRequest {
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(default = "empty_object")]
    pub context: serde_json::Value,
    #[serde(default)]
    pub idempotency_key: Option<String>,
    #[serde(default)]
    pub initiator: Option<String>,
    /// Schedules the task: no step of it starts before this time (RFC 3339 in JSON).
    #[serde(default)]
    pub run_at: Option<DateTime<Utc>>,
}

impl TaskRequest {
    /// Whether the request schedules the task for later than now.
    pub fn is_scheduled(&self) -> bool {
        self.run_at.is_some_and(|at| at > Utc::now())
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedTask {
    pub task_uuid: Uuid,
    /// False when an existing task was returned for the request's idempotency key.
    pub created: bool,
    pub state: String,
}
