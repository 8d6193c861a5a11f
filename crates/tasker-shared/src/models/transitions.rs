use super::StoreError;
use crate::state::{StepState, TaskState};
use chrono::{DateTime, Utc};
use sqlx::{Executor, Postgres};
use uuid::Uuid;

/// Moves a task `from -> to` if it is still in `from`. `Ok(false)` means another process
/// moved it first; an illegal transition is an error before anything is sent.
pub async fn transition_task<'c, E>(
    executor: E,
    task: Uuid,
    from: TaskState,
    to: TaskState,
    actor: &str,
    metadata: serde_json::Value,
) -> Result<bool, StoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    from.check_transition(to, &task.to_string())?;
    Ok(
        sqlx::query_scalar("SELECT tasker.transition_task($1, $2, $3, $4, $5)")
            .bind(task)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(actor)
            .bind(metadata)
            .fetch_one(executor)
            .await?,
    )
}

/// The step counterpart of [`transition_task`].
pub async fn transition_step<'c, E>(
    executor: E,
    step: Uuid,
    from: StepState,
    to: StepState,
    actor: &str,
    metadata: serde_json::Value,
) -> Result<bool, StoreError>
where
    E: Executor<'c, Database = Postgres>,
{
    from.check_transition(to, &step.to_string())?;
    Ok(
        sqlx::query_scalar("SELECT tasker.transition_step($1, $2, $3, $4, $5)")
            .bind(step)
            .bind(from.as_str())
            .bind(to.as_str())
            .bind(actor)
            .bind(metadata)
            .fetch_one(executor)
            .await?,
    )
}

/// One kept transition, task or step.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct TransitionRow {
    pub from_state: Option<String>,
    pub to_state: String,
    pub sort_key: i32,
    pub most_recent: bool,
    pub actor: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl TransitionRow {
    pub async fn for_task<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
    ) -> Result<Vec<Self>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT from_state, to_state, sort_key, most_recent, actor, metadata, created_at
               FROM tasker.task_transitions WHERE task_uuid = $1 ORDER BY sort_key",
        )
        .bind(task)
        .fetch_all(executor)
        .await?)
    }

    pub async fn for_step<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        step: Uuid,
    ) -> Result<Vec<Self>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT from_state, to_state, sort_key, most_recent, actor, metadata, created_at
               FROM tasker.workflow_step_transitions WHERE step_uuid = $1 ORDER BY sort_key",
        )
        .bind(step)
        .fetch_all(executor)
        .await?)
    }
}
