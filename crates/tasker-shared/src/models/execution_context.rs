use super::StoreError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Executor, Postgres};
use std::str::FromStr;
use uuid::Uuid;

/// What `get_task_execution_context` says about a task, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    BlockedByFailures,
    HasReadySteps,
    Processing,
    AllComplete,
    WaitingForDependencies,
}

impl FromStr for ExecutionStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "blocked_by_failures" => Self::BlockedByFailures,
            "has_ready_steps" => Self::HasReadySteps,
            "processing" => Self::Processing,
            "all_complete" => Self::AllComplete,
            "waiting_for_dependencies" => Self::WaitingForDependencies,
            other => return Err(format!("unknown execution status '{other}'")),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskExecutionContext {
    pub task_uuid: Uuid,
    pub total_steps: i64,
    pub pending_steps: i64,
    pub in_progress_steps: i64,
    pub completed_steps: i64,
    pub failed_steps: i64,
    pub ready_steps: i64,
    pub permanently_blocked_steps: i64,
    pub execution_status: ExecutionStatus,
    pub recommended_action: String,
    pub health_status: String,
}

#[derive(sqlx::FromRow)]
struct RawContext {
    task_uuid: Uuid,
    total_steps: i64,
    pending_steps: i64,
    in_progress_steps: i64,
    completed_steps: i64,
    failed_steps: i64,
    ready_steps: i64,
    permanently_blocked_steps: i64,
    execution_status: String,
    recommended_action: String,
    health_status: String,
}

impl TaskExecutionContext {
    pub async fn fetch<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
    ) -> Result<Self, StoreError> {
        let r: RawContext = sqlx::query_as("SELECT * FROM tasker.get_task_execution_context($1)")
            .bind(task)
            .fetch_one(executor)
            .await?;
        let execution_status =
            r.execution_status
                .parse()
                .map_err(|reason| StoreError::Corrupt {
                    what: "execution context of task",
                    id: task,
                    reason,
                })?;
        Ok(Self {
            task_uuid: r.task_uuid,
            total_steps: r.total_steps,
            pending_steps: r.pending_steps,
            in_progress_steps: r.in_progress_steps,
            completed_steps: r.completed_steps,
            failed_steps: r.failed_steps,
            ready_steps: r.ready_steps,
            permanently_blocked_steps: r.permanently_blocked_steps,
            execution_status,
            recommended_action: r.recommended_action,
            health_status: r.health_status,
        })
    }
}

/// One row of `get_step_readiness_status`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct StepReadiness {
    pub step_uuid: Uuid,
    pub task_uuid: Uuid,
    pub name: String,
    pub current_state: String,
    pub dependencies_satisfied: bool,
    pub retry_eligible: bool,
    pub ready_for_execution: bool,
    pub attempts: i32,
    pub max_attempts: i32,
    pub retryable: bool,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub total_parents: i32,
    pub completed_parents: i32,
}

impl StepReadiness {
    pub async fn for_task<'c, E: Executor<'c, Database = Postgres>>(
        executor: E,
        task: Uuid,
    ) -> Result<Vec<Self>, StoreError> {
        Ok(
            sqlx::query_as("SELECT * FROM tasker.get_step_readiness_status($1)")
                .bind(task)
                .fetch_all(executor)
                .await?,
        )
    }
}
