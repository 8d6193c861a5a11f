//! `/ui/failures`: failed steps grouped by handler and error type: those failed now (in error,
//! or waiting to retry) and every failed attempt of the last hour; and the dead letters,
//! steps failed because their worker was lost on their last attempt.

use super::task::step_href;
use super::{render, when, Layout, UiError};
use crate::OrchestrationCore;
use askama::Template;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use tasker_shared::models::DeadLetter;
use uuid::Uuid;

/// Groups shown per table.
const GROUPS: i64 = 100;

#[derive(sqlx::FromRow)]
struct GroupRow {
    handler: String,
    error_type: String,
    state: String,
    steps: i64,
    tasks: i64,
    latest: DateTime<Utc>,
    task_uuid: Uuid,
    step_name: String,
    message: Option<String>,
}

pub struct Group {
    pub handler: String,
    pub error_type: String,
    pub state: String,
    pub steps: i64,
    pub tasks: i64,
    pub latest: String,
    pub task_uuid: Uuid,
    pub step_name: String,
    pub step_href: String,
    pub message: String,
}

impl From<GroupRow> for Group {
    fn from(r: GroupRow) -> Self {
        Group {
            step_href: step_href(r.task_uuid, &r.step_name),
            handler: r.handler,
            error_type: r.error_type,
            state: r.state,
            steps: r.steps,
            tasks: r.tasks,
            latest: when(&r.latest),
            task_uuid: r.task_uuid,
            step_name: r.step_name,
            message: r.message.unwrap_or_default(),
        }
    }
}

#[derive(Template)]
#[template(path = "dashboard/failures.html")]
struct FailuresPage {
    layout: Layout,
    current: Vec<Group>,
    recent: Vec<Group>,
    dead_letters: Vec<DeadLetterLine>,
}

/// Shown on the page; `GET /v1/dead_letters` pages through the rest.
const DEAD_LETTERS: i64 = 50;

pub struct DeadLetterLine {
    pub task_uuid: Uuid,
    pub step_name: String,
    pub step_href: String,
    pub template: String,
    pub attempts: String,
    pub failed_at: String,
    pub message: String,
}

impl From<DeadLetter> for DeadLetterLine {
    fn from(d: DeadLetter) -> Self {
        DeadLetterLine {
            step_href: step_href(d.task_uuid, &d.step_name),
            template: format!("{}/{}@{}", d.namespace, d.task_name, d.task_version),
            attempts: format!("{} of {}", d.attempts, d.max_attempts),
            failed_at: when(&d.failed_at),
            message: d.error["message"].as_str().unwrap_or_default().to_string(),
            task_uuid: d.task_uuid,
            step_name: d.step_name,
        }
    }
}

pub async fn page(State(core): State<OrchestrationCore>) -> Result<Response, UiError> {
    // Each group names its newest example, which is what an operator opens first.
    let current: Vec<GroupRow> = sqlx::query_as(
        "SELECT s.handler_callable AS handler,
                coalesce(s.last_error->>'error_type', 'unknown') AS error_type,
                s.state,
                count(*) AS steps,
                count(DISTINCT s.task_uuid) AS tasks,
                max(s.updated_at) AS latest,
                (array_agg(s.task_uuid ORDER BY s.updated_at DESC))[1] AS task_uuid,
                (array_agg(s.name ORDER BY s.updated_at DESC))[1] AS step_name,
                (array_agg(s.last_error->>'message' ORDER BY s.updated_at DESC))[1] AS message
           FROM tasker.workflow_steps s
          WHERE s.last_error IS NOT NULL AND s.state IN ('error', 'waiting_for_retry')
          GROUP BY 1, 2, 3
          ORDER BY steps DESC, latest DESC
          LIMIT $1",
    )
    .bind(GROUPS)
    .fetch_all(&core.pool)
    .await?;
    let recent: Vec<GroupRow> = sqlx::query_as(
        "SELECT s.handler_callable AS handler,
                coalesce(a.error->>'error_type', 'unknown') AS error_type,
                'attempt failed' AS state,
                count(*) AS steps,
                count(DISTINCT a.task_uuid) AS tasks,
                max(a.recorded_at) AS latest,
                (array_agg(a.task_uuid ORDER BY a.recorded_at DESC))[1] AS task_uuid,
                (array_agg(s.name ORDER BY a.recorded_at DESC))[1] AS step_name,
                (array_agg(a.error->>'message' ORDER BY a.recorded_at DESC))[1] AS message
           FROM tasker.step_result_audit_log a
           JOIN tasker.workflow_steps s USING (step_uuid)
          WHERE a.recorded_at > now() - interval '1 hour' AND NOT a.success
          GROUP BY 1, 2
          ORDER BY steps DESC, latest DESC
          LIMIT $1",
    )
    .bind(GROUPS)
    .fetch_all(&core.pool)
    .await?;
    let dead_letters = DeadLetter::list(&core.pool, DEAD_LETTERS, 0).await?;
    render(&FailuresPage {
        layout: Layout::new(&core, "Failures", "failures"),
        current: current.into_iter().map(Group::from).collect(),
        recent: recent.into_iter().map(Group::from).collect(),
        dead_letters: dead_letters.into_iter().map(DeadLetterLine::from).collect(),
    })
}
