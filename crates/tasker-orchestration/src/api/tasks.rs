use super::paging::page;
use super::ApiError;
use crate::task_operations::{act_on_step as apply_step_action, cancel_task, StepAction};
use crate::{OrchestrationCore, TaskRequest};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Datelike;
use serde::Deserialize;
use tasker_shared::models::{StepReadiness, StepRow, TaskExecutionContext, TaskRow};
use uuid::Uuid;

pub async fn create(
    State(core): State<OrchestrationCore>,
    body: Result<Json<TaskRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let Json(request) = body?;
    for (field, value) in [
        ("namespace", &request.namespace),
        ("name", &request.name),
        ("version", &request.version),
    ] {
        if value.trim().is_empty() {
            return Err(ApiError::bad_request(
                field,
                format!("{field} must not be empty"),
            ));
        }
    }
    // Postgres keeps times from 4713 BC on; an earlier one would fail as a database error.
    if request.run_at.is_some_and(|t| t.year() < 1) {
        return Err(ApiError::bad_request(
            "run_at",
            "run_at must be a time in year 1 or later",
        ));
    }
    if !request.context.is_object() {
        return Err(ApiError::bad_request(
            "context",
            "context must be a JSON object",
        ));
    }
    if request
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.is_empty() || k.len() > 255)
    {
        return Err(ApiError::bad_request(
            "idempotency_key",
            "idempotency_key must be 1 to 255 characters",
        ));
    }
    let created = core.initializer.create_task(&request).await?;
    let status = if created.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(serde_json::to_value(created).expect("serializes")),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    status: Option<String>,
    namespace: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn list(
    State(core): State<OrchestrationCore>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let (limit, offset) = page(
        p.limit,
        p.offset,
        "narrow the list with status or namespace",
    )?;
    if let Some(s) = &p.status {
        if s.parse::<tasker_shared::TaskState>().is_err() {
            return Err(ApiError::bad_request(
                "status",
                format!("unknown task status '{s}'"),
            ));
        }
    }
    let tasks = TaskRow::list(
        &core.pool,
        p.status.as_deref(),
        p.namespace.as_deref(),
        limit,
        offset,
    )
    .await?;
    Ok(Json(
        serde_json::json!({ "tasks": tasks, "limit": limit, "offset": offset }),
    ))
}

fn task_id(path: Result<Path<Uuid>, PathRejection>) -> Result<Uuid, ApiError> {
    Ok(path?.0)
}

/// Longest `wait_seconds` a request may ask for.
const MAX_WAIT_SECONDS: u64 = 60;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// Returns when the task is terminal or after this many seconds, whichever comes first.
    wait_seconds: Option<u64>,
}

pub async fn get(
    State(core): State<OrchestrationCore>,
    path: Result<Path<Uuid>, PathRejection>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = task_id(path)?;
    let Query(p) = params?;
    if let Some(wait) = p.wait_seconds {
        if wait > MAX_WAIT_SECONDS {
            return Err(ApiError::bad_request(
                "wait_seconds",
                format!("wait_seconds must be at most {MAX_WAIT_SECONDS}"),
            ));
        }
        core.waiter
            .wait(id, std::time::Duration::from_secs(wait))
            .await
            .map_err(tasker_shared::models::StoreError::from)?;
    }
    let Some(task) = TaskRow::find(&core.pool, id).await? else {
        return Err(crate::OrchestrationError::missing_task(&core.pool, id)
            .await
            .into());
    };
    let context = TaskExecutionContext::fetch(&core.pool, id).await?;
    let readiness = StepReadiness::for_task(&core.pool, id).await?;
    Ok(Json(
        serde_json::json!({ "task": task, "execution_context": context, "steps": readiness }),
    ))
}

pub async fn cancel(
    State(core): State<OrchestrationCore>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = task_id(path)?;
    let task = cancel_task(&core.pool, id, "api").await?;
    Ok(Json(serde_json::json!({ "task": task })))
}

pub async fn steps(
    State(core): State<OrchestrationCore>,
    path: Result<Path<Uuid>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = task_id(path)?;
    if TaskRow::find(&core.pool, id).await?.is_none() {
        return Err(crate::OrchestrationError::missing_task(&core.pool, id)
            .await
            .into());
    }
    let steps = StepRow::for_task(&core.pool, id).await?;
    Ok(Json(serde_json::json!({ "steps": steps })))
}

pub async fn act_on_step(
    State(core): State<OrchestrationCore>,
    path: Result<Path<(Uuid, String)>, PathRejection>,
    body: Result<Json<StepAction>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Path((id, step)) = path?;
    let Json(action) = body?;
    let row = apply_step_action(
        &core.pool,
        core.queues.notifier(),
        id,
        &step,
        &action,
        "api",
    )
    .await?;
    Ok(Json(serde_json::json!({ "step": row })))
}
