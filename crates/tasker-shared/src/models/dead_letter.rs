//! Dead letters: steps failed for good because their worker was lost on their last attempt
//! (`worker_lost`: a handler that kills its process, an out-of-memory kill). They block their
//! task like any permanent failure; resetting the step (`PATCH .../steps/{step}` with
//! `reset`, or the dashboard) is the way back once the cause is fixed.

use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

/// The error type the worker-loss path records (`tasker.fail_lost_steps`).
pub const WORKER_LOST: &str = "worker_lost";

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeadLetter {
    pub task_uuid: Uuid,
    pub step_uuid: Uuid,
    pub namespace: String,
    pub task_name: String,
    pub task_version: String,
    pub step_name: String,
    pub handler_callable: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub error: serde_json::Value,
    pub failed_at: DateTime<Utc>,
}

impl DeadLetter {
    /// Newest first. Reads only failed steps (the partial index over them), however much
    /// history is kept.
    pub async fn list(pool: &PgPool, limit: i64, offset: i64) -> Result<Vec<Self>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.task_uuid, s.step_uuid, n.name AS namespace, nt.name AS task_name,
                    nt.version AS task_version, s.name AS step_name, s.handler_callable,
                    s.attempts, s.max_attempts, s.last_error AS error, s.updated_at AS failed_at
               FROM tasker.workflow_steps s
               JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
               JOIN tasker.named_tasks nt ON nt.named_task_uuid = t.named_task_uuid
               JOIN tasker.namespaces n ON n.namespace_uuid = nt.namespace_uuid
              WHERE s.last_error IS NOT NULL AND s.state = 'error'
                AND s.last_error->>'error_type' = $1
              ORDER BY s.updated_at DESC, s.step_uuid
              LIMIT $2 OFFSET $3",
        )
        .bind(WORKER_LOST)
        .bind(limit)
        .bind(offset)
        .fetch_all(pool)
        .await?)
    }
}
