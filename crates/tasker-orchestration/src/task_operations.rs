//! Operator actions: cancel a task; reset, resolve or complete a failed step.

use crate::OrchestrationError;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tasker_shared::models::{transition_step, transition_task, StepRow, TaskRow};
use tasker_shared::queue::{worker_queue, Notifier};
use tasker_shared::state::{StepState, TaskState};
use tasker_shared::task_waiter::TASK_FINISHED_CHANNEL;
use uuid::Uuid;

/// What to do with a step, as PATCH /v1/tasks/{id}/steps/{step} takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepAction {
    /// Give a failed step a fresh set of attempts (its attempt count keeps growing, so every
    /// attempt's audit row stays distinct; its budget grows by the original `max_attempts`).
    Reset,
    /// Mark the step done without a result; its children may run.
    Resolve,
    /// Mark the step complete with the given result.
    Complete {
        #[serde(default)]
        result: serde_json::Value,
    },
}

impl StepAction {
    fn name(&self) -> &'static str {
        match self {
            StepAction::Reset => "reset",
            StepAction::Resolve => "resolve",
            StepAction::Complete { .. } => "complete",
        }
    }
}

/// Cancels a task: no new steps are enqueued, steps not yet started are cancelled, steps in
/// flight may still land their results without reviving the task.
pub async fn cancel_task(
    pool: &PgPool,
    task: Uuid,
    actor: &str,
) -> Result<TaskRow, OrchestrationError> {
    let mut tx = pool.begin().await?;
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM tasker.tasks WHERE task_uuid = $1 FOR NO KEY UPDATE")
            .bind(task)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(state) = state else {
        return Err(OrchestrationError::missing_task(pool, task).await);
    };
    let state: TaskState = state
        .parse()
        .map_err(tasker_shared::models::StoreError::from)?;
    if !state.can_transition_to(TaskState::Cancelled) {
        return Err(OrchestrationError::TaskFinished {
            task,
            state: state.to_string(),
            action: "cancel",
        });
    }
    transition_task(
        &mut *tx,
        task,
        state,
        TaskState::Cancelled,
        actor,
        serde_json::json!({}),
    )
    .await?;
    let unstarted: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT step_uuid, state FROM tasker.workflow_steps
          WHERE task_uuid = $1 AND state IN ('pending', 'enqueued', 'waiting_for_retry')
          ORDER BY step_uuid FOR NO KEY UPDATE",
    )
    .bind(task)
    .fetch_all(&mut *tx)
    .await?;
    for (step, s) in unstarted {
        let from: StepState = s.parse().map_err(tasker_shared::models::StoreError::from)?;
        transition_step(
            &mut *tx,
            step,
            from,
            StepState::Cancelled,
            actor,
            serde_json::json!({"reason": "task cancelled"}),
        )
        .await?;
    }
    tx.commit().await?;
    // Rare enough to notify directly rather than through a process's Notifier.
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(TASK_FINISHED_CHANNEL)
        .bind(task.to_string())
        .execute(pool)
        .await?;
    Ok(TaskRow::get(pool, task).await?)
}

/// Applies an operator action to one step, then lets the task continue.
pub async fn act_on_step(
    pool: &PgPool,
    notifier: &Notifier,
    task: Uuid,
    step_name: &str,
    action: &StepAction,
    actor: &str,
) -> Result<StepRow, OrchestrationError> {
    let mut tx = pool.begin().await?;
    let task_state: Option<String> =
        sqlx::query_scalar("SELECT state FROM tasker.tasks WHERE task_uuid = $1 FOR NO KEY UPDATE")
            .bind(task)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(task_state) = task_state else {
        return Err(OrchestrationError::missing_task(pool, task).await);
    };
    let task_state: TaskState = task_state
        .parse()
        .map_err(tasker_shared::models::StoreError::from)?;
    if matches!(
        task_state,
        TaskState::Complete | TaskState::Cancelled | TaskState::ResolvedManually
    ) {
        return Err(OrchestrationError::TaskFinished {
            task,
            state: task_state.to_string(),
            action: action.name(),
        });
    }
    let step = StepRow::find_by_name(&mut *tx, task, step_name)
        .await?
        .ok_or_else(|| OrchestrationError::StepNotFound {
            task,
            step: step_name.to_string(),
        })?;
    let state = step.step_state()?;
    let refused = || OrchestrationError::StepActionRefused {
        task,
        step: step_name.to_string(),
        state: state.to_string(),
        action: action.name(),
    };
    let meta = serde_json::json!({ "operator_action": action.name() });
    match action {
        StepAction::Reset => {
            if state != StepState::Error {
                return Err(refused());
            }
            transition_step(
                &mut *tx,
                step.step_uuid,
                state,
                StepState::Pending,
                actor,
                meta,
            )
            .await?;
            // An operator's reset is a deliberate retry, so it applies even to steps the
            // template marked not retryable.
            sqlx::query(
                "UPDATE tasker.workflow_steps
                    SET max_attempts = attempts + max_attempts, retryable = true,
                        next_retry_at = NULL, completed_at = NULL
                  WHERE step_uuid = $1",
            )
            .bind(step.step_uuid)
            .execute(&mut *tx)
            .await?;
        }
        StepAction::Resolve => {
            if !state.can_transition_to(StepState::ResolvedManually) {
                return Err(refused());
            }
            transition_step(
                &mut *tx,
                step.step_uuid,
                state,
                StepState::ResolvedManually,
                actor,
                meta,
            )
            .await?;
            sqlx::query("UPDATE tasker.workflow_steps SET completed_at = clock_timestamp() WHERE step_uuid = $1")
                .bind(step.step_uuid)
                .execute(&mut *tx)
                .await?;
        }
        StepAction::Complete { result } => {
            if !state.can_transition_to(StepState::Complete)
                || state == StepState::EnqueuedForOrchestration
            {
                return Err(refused());
            }
            transition_step(
                &mut *tx,
                step.step_uuid,
                state,
                StepState::Complete,
                actor,
                meta,
            )
            .await?;
            sqlx::query(
                "UPDATE tasker.workflow_steps SET results = $2, completed_at = clock_timestamp() WHERE step_uuid = $1",
            )
            .bind(step.step_uuid)
            .bind(result)
            .execute(&mut *tx)
            .await?;
        }
    }
    if matches!(action, StepAction::Resolve | StepAction::Complete { .. }) {
        // The step is done: its children have one parent fewer to wait for.
        sqlx::query("SELECT tasker.parents_done($1)")
            .bind(vec![step.step_uuid])
            .execute(&mut *tx)
            .await?;
    }
    // A task the failure had ended is reopened for evaluation.
    let reopen_from = match task_state {
        TaskState::Error | TaskState::BlockedByFailures => Some(task_state),
        _ => None,
    };
    if let Some(from) = reopen_from {
        transition_task(
            &mut *tx,
            task,
            from,
            TaskState::EvaluatingResults,
            actor,
            serde_json::json!({
                "operator_action": action.name(), "step": step_name,
            }),
        )
        .await?;
    }
    sqlx::query("SELECT tasker.finalize_task($1, $2)")
        .bind(task)
        .bind(actor)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if let Ok(queue) = worker_queue(&TaskRow::get(pool, task).await?.namespace) {
        notifier.notify(&queue);
    }
    // Resolving the last failed step may have completed the task.
    notifier.task_finished(vec![task]);
    StepRow::find_by_name(pool, task, step_name)
        .await?
        .ok_or_else(|| OrchestrationError::StepNotFound {
            task,
            step: step_name.to_string(),
        })
}
