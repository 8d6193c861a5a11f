//! `/ui/tasks/{task_uuid}/steps/{step_name}`: one step: its handler, every attempt with its
//! error and backtrace, the next retry, its transitions, inputs and result.

use super::task::{error_message, parents, path_error, step_href, StepActions};
use super::{pretty, render, when, when_opt, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use tasker_shared::models::{StepRow, TaskRow, TransitionRow};
use uuid::Uuid;

pub struct Attempt {
    pub attempt: i32,
    pub worker_id: String,
    pub success: bool,
    pub execution_time_ms: i64,
    pub recorded_at: String,
    pub error: String,
    pub retryable: String,
    pub backtrace: Vec<String>,
}

pub struct Link {
    pub name: String,
    pub href: String,
}

#[derive(Template)]
#[template(path = "dashboard/step.html")]
struct StepPage {
    layout: Layout,
    task: TaskRow,
    step: StepRow,
    /// The step's page; its actions are posted below it.
    href: String,
    initialization: String,
    inputs: String,
    results: Option<String>,
    error: String,
    backtrace: Vec<String>,
    next_retry_at: String,
    lease_expires_at: String,
    started_at: String,
    completed_at: String,
    attempts: Vec<Attempt>,
    transitions: Vec<(String, String, String, String)>,
    parents: Vec<Link>,
    children: Vec<Link>,
    actions: StepActions,
}

fn backtrace(e: &serde_json::Value) -> Vec<String> {
    match &e["backtrace"] {
        serde_json::Value::Array(lines) => lines
            .iter()
            .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_string))
            .collect(),
        serde_json::Value::String(s) => s.lines().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

pub async fn page(
    State(core): State<OrchestrationCore>,
    path: Result<Path<(Uuid, String)>, PathRejection>,
) -> Result<Response, UiError> {
    let Path((id, name)) = path.map_err(path_error)?;
    let pool = &core.pool;
    let task = TaskRow::get(pool, id)
        .await
        .map_err(UiError::missing_task)?;
    let step = StepRow::find_by_name(pool, id, &name)
        .await?
        .ok_or_else(|| UiError::not_found(format!("step '{name}' of task {id}")))?;
    let initialization: serde_json::Value = sqlx::query_scalar(
        "SELECT handler_initialization FROM tasker.workflow_steps WHERE step_uuid = $1",
    )
    .bind(step.step_uuid)
    .fetch_one(pool)
    .await?;
    type AuditRow = (
        i32,
        String,
        bool,
        Option<serde_json::Value>,
        i64,
        DateTime<Utc>,
    );
    let audits: Vec<AuditRow> = sqlx::query_as(
        "SELECT attempt, worker_id, success, error, execution_time_ms, recorded_at
           FROM tasker.step_result_audits WHERE step_uuid = $1 ORDER BY attempt",
    )
    .bind(step.step_uuid)
    .fetch_all(pool)
    .await?;
    let transitions = TransitionRow::for_step(pool, step.step_uuid).await?;
    let edges = parents(pool, id).await?;
    let link = |n: &String| Link {
        name: n.clone(),
        href: step_href(id, n),
    };
    render(&StepPage {
        layout: Layout::new(&core, format!("Step {name}"), "tasks"),
        href: step_href(id, &name),
        initialization: pretty(&initialization),
        inputs: pretty(&step.inputs),
        results: step.results.as_ref().map(pretty),
        error: error_message(&step.last_error),
        backtrace: step.last_error.as_ref().map(backtrace).unwrap_or_default(),
        next_retry_at: when_opt(&step.next_retry_at),
        lease_expires_at: when_opt(&step.lease_expires_at),
        started_at: when_opt(&step.started_at),
        completed_at: when_opt(&step.completed_at),
        attempts: audits
            .into_iter()
            .map(
                |(attempt, worker_id, success, error, execution_time_ms, recorded_at)| Attempt {
                    attempt,
                    worker_id,
                    success,
                    execution_time_ms,
                    recorded_at: when(&recorded_at),
                    retryable: error
                        .as_ref()
                        .and_then(|e| e["retryable"].as_bool())
                        .map(|r| if r { "yes" } else { "no" }.to_string())
                        .unwrap_or_default(),
                    backtrace: error.as_ref().map(backtrace).unwrap_or_default(),
                    error: error_message(&error),
                },
            )
            .collect(),
        transitions: transitions
            .into_iter()
            .map(|t| {
                (
                    when(&t.created_at),
                    t.from_state.unwrap_or_default(),
                    t.to_state,
                    t.actor,
                )
            })
            .collect(),
        parents: edges
            .iter()
            .filter(|(_, c)| *c == name)
            .map(|(p, _)| link(p))
            .collect(),
        children: edges
            .iter()
            .filter(|(p, _)| *p == name)
            .map(|(_, c)| link(c))
            .collect(),
        actions: StepActions::of(task.task_state()?, &step.state),
        task,
        step,
    })
}
