use super::StoreError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{Executor, Postgres};
use uuid::Uuid;

/// One workflow step as stored: a row of the view `tasker.step_rows`, read by column name
/// or, as a whole (an array of them), as its row type, field by field in the view's column
/// order.
#[derive(Debug, Clone, Serialize, Deserialize, sqlx::FromRow, sqlx::Type)]
#[sqlx(type_name = "tasker.step_rows")]
pub struct StepRow {
    pub step_uuid: Uuid,
    pub task_uuid: Uuid,
    pub name: String,
    pub position: i32,
    /// standard, decision, batchable, batch_worker (a batch copy) or deferred_convergence.
    pub step_type: String,
    pub handler_callable: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub retryable: bool,
    pub backoff: String,
    pub backoff_base_ms: i64,
    pub max_backoff_ms: i64,
    pub timeout_seconds: Option<i32>,
    pub inputs: serde_json::Value,
    pub results: Option<serde_json::Value>,
    pub last_error: Option<serde_json::Value>,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub claim_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub enqueued_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

/// The view names the columns once, for these reads and `tasker.create_task`'s with `p_read`.
const SELECT: &str = "SELECT * FROM tasker.step_rows";

impl StepRow {
    pub async fn for_task<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
    ) -> Result<Vec<Self>, StoreError> {
        Ok(sqlx::query_as(&format!(
            "{SELECT} WHERE task_uuid = $1 ORDER BY position, name"
        ))
        .bind(task)
        .fetch_all(executor)
        .await?)
    }

    pub async fn find_by_name<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
        name: &str,
    ) -> Result<Option<Self>, StoreError> {
        Ok(
            sqlx::query_as(&format!("{SELECT} WHERE task_uuid = $1 AND name = $2"))
                .bind(task)
                .bind(name)
                .fetch_optional(executor)
                .await?,
        )
    }

    pub fn step_state(&self) -> Result<crate::state::StepState, StoreError> {
        Ok(self.state.parse()?)
    }
}
