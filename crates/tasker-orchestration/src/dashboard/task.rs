//! `/ui/tasks/{task_uuid}`: one task: its DAG coloured by step state, the step table with the
//! operator actions, the transition timeline, the context and the step results.

use super::{dag, pretty, render, when, when_opt, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::PgPool;
use tasker_shared::models::{StepRow, TaskExecutionContext, TaskRow, TransitionRow};
use tasker_shared::state::{StepState, TaskState};
use uuid::Uuid;

/// The newest transitions shown (a task with thousands of batch steps has many more).
const TIMELINE: i64 = 500;

pub(crate) fn path_error(e: PathRejection) -> UiError {
    UiError::BadRequest {
        field: "path",
        message: e.body_text(),
    }
}

/// What a step may be asked to do from the dashboard, given its task's state.
pub struct StepActions {
    pub reset: bool,
    pub resolve: bool,
}

impl StepActions {
    pub fn of(task: TaskState, step: &str) -> Self {
        let task_open = !matches!(
            task,
            TaskState::Complete | TaskState::Cancelled | TaskState::ResolvedManually
        );
        let step: Option<StepState> = step.parse().ok();
        Self {
            reset: task_open && step == Some(StepState::Error),
            resolve: task_open
                && matches!(step, Some(StepState::Error | StepState::WaitingForRetry)),
        }
    }
}

pub struct StepLine {
    pub name: String,
    /// The step's page; its actions are posted below it.
    pub href: String,
    pub state: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub handler: String,
    pub next_retry_at: String,
    pub started_at: String,
    pub completed_at: String,
    pub error: String,
    pub results: Option<String>,
    pub actions: StepActions,
}

pub struct Event {
    pub at: String,
    pub step: Option<String>,
    pub from: String,
    pub to: String,
    pub actor: String,
}

#[derive(Template)]
#[template(path = "dashboard/task.html")]
struct TaskPage {
    layout: Layout,
    task: TaskRow,
    created_at: String,
    updated_at: String,
    completed_at: String,
    run_at: String,
    /// Its run_at is still ahead.
    scheduled: bool,
    execution: TaskExecutionContext,
    execution_status: String,
    can_cancel: bool,
    notice: Option<String>,
    dag: String,
    steps: Vec<StepLine>,
    timeline: Vec<Event>,
    context: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    done: Option<String>,
    step: Option<String>,
}

impl Notice {
    /// Fixed sentences only: a link must not be able to put words on the page.
    fn text(&self) -> Option<String> {
        let step = self.step.as_deref().unwrap_or("the step");
        Some(match self.done.as_deref()? {
            "reset" => format!("Step {step} was reset and will run again."),
            "resolve" => format!("Step {step} was resolved manually."),
            "cancel" => "The task was cancelled.".to_string(),
            _ => return None,
        })
    }
}

/// Parent names of every step of the task, by child name.
pub(crate) async fn parents(pool: &PgPool, task: Uuid) -> Result<Vec<(String, String)>, UiError> {
    Ok(sqlx::query_as(
        "SELECT p.name, c.name
           FROM tasker.workflow_step_edges e
           JOIN tasker.workflow_steps p ON p.step_uuid = e.from_step_uuid
           JOIN tasker.workflow_steps c ON c.step_uuid = e.to_step_uuid
          WHERE e.task_uuid = $1",
    )
    .bind(task)
    .fetch_all(pool)
    .await?)
}

pub(crate) fn error_message(e: &Option<serde_json::Value>) -> String {
    e.as_ref()
        .map(|e| {
            let kind = e["error_type"].as_str().unwrap_or("error");
            let message = e["message"].as_str().unwrap_or_default();
            format!("{kind}: {message}")
        })
        .unwrap_or_default()
}

pub(crate) fn step_href(task: Uuid, step: &str) -> String {
    format!("/ui/tasks/{task}/steps/{}", super::percent_encode(step))
}

pub async fn page(
    State(core): State<OrchestrationCore>,
    path: Result<Path<Uuid>, PathRejection>,
    notice: Result<Query<Notice>, QueryRejection>,
) -> Result<Response, UiError> {
    let Path(id) = path.map_err(path_error)?;
    let notice = notice.map(|q| q.0).unwrap_or_default();
    let pool = &core.pool;
    let task = TaskRow::get(pool, id)
        .await
        .map_err(UiError::missing_task)?;
    let task_state = task.task_state()?;
    let steps = StepRow::for_task(pool, id).await?;
    let edges = parents(pool, id).await?;
    let execution = TaskExecutionContext::fetch(pool, id).await?;
    let task_transitions = TransitionRow::for_task(pool, id).await?;
    /// Step name, from, to, actor, when.
    type StepTransition = (String, Option<String>, String, String, DateTime<Utc>);
    let step_transitions: Vec<StepTransition> = sqlx::query_as(
        "SELECT s.name, tr.from_state, tr.to_state, tr.actor, tr.created_at
               FROM tasker.workflow_step_transitions tr
               JOIN tasker.workflow_steps s USING (step_uuid)
              WHERE s.task_uuid = $1
              ORDER BY tr.created_at DESC LIMIT $2",
    )
    .bind(id)
    .bind(TIMELINE)
    .fetch_all(pool)
    .await?;

    let nodes: Vec<dag::Node> = steps
        .iter()
        .map(|s| dag::Node {
            name: s.name.clone(),
            state: Some(s.state.clone()),
            href: Some(step_href(id, &s.name)),
            parents: edges
                .iter()
                .filter(|(_, child)| *child == s.name)
                .map(|(parent, _)| parent.clone())
                .collect(),
        })
        .collect();
    let mut timeline: Vec<(DateTime<Utc>, Event)> = task_transitions
        .into_iter()
        .map(|t| {
            (
                t.created_at,
                Event {
                    at: when(&t.created_at),
                    step: None,
                    from: t.from_state.unwrap_or_default(),
                    to: t.to_state,
                    actor: t.actor,
                },
            )
        })
        .chain(
            step_transitions
                .into_iter()
                .map(|(step, from, to, actor, at)| {
                    (
                        at,
                        Event {
                            at: when(&at),
                            step: Some(step),
                            from: from.unwrap_or_default(),
                            to,
                            actor,
                        },
                    )
                }),
        )
        .collect();
    timeline.sort_by_key(|(at, _)| *at);

    render(&TaskPage {
        layout: Layout::new(&core, format!("Task {}", task.name), "tasks"),
        created_at: when(&task.created_at),
        updated_at: when(&task.updated_at),
        completed_at: when_opt(&task.completed_at),
        run_at: when_opt(&task.run_at),
        scheduled: task.run_at.is_some_and(|at| at > chrono::Utc::now()),
        execution_status: serde_json::to_value(execution.execution_status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        execution,
        can_cancel: task_state.can_transition_to(TaskState::Cancelled),
        notice: notice.text(),
        dag: dag::svg(&nodes),
        steps: steps
            .into_iter()
            .map(|s| StepLine {
                actions: StepActions::of(task_state, &s.state),
                error: error_message(&s.last_error),
                results: s.results.as_ref().map(pretty),
                next_retry_at: when_opt(&s.next_retry_at),
                started_at: when_opt(&s.started_at),
                completed_at: when_opt(&s.completed_at),
                href: step_href(id, &s.name),
                name: s.name,
                state: s.state,
                attempts: s.attempts,
                max_attempts: s.max_attempts,
                handler: s.handler_callable,
            })
            .collect(),
        timeline: timeline.into_iter().map(|(_, e)| e).collect(),
        context: pretty(&task.context),
        task,
    })
}
