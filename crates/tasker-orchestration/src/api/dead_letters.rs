//! `GET /v1/dead_letters`: steps failed because their worker was lost on their last attempt.

use super::ApiError;
use crate::OrchestrationCore;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use tasker_shared::models::DeadLetter;

/// Most dead letters one request returns, and the furthest it may page.
const MAX_PAGE: i64 = 500;
const MAX_OFFSET: i64 = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    limit: Option<i64>,
    offset: Option<i64>,
}

pub async fn list(
    State(core): State<OrchestrationCore>,
    params: Result<Query<Params>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(p) = params?;
    let limit = p.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            "limit",
            format!("limit must be between 1 and {MAX_PAGE}"),
        ));
    }
    let offset = p.offset.unwrap_or(0);
    if !(0..=MAX_OFFSET).contains(&offset) {
        return Err(ApiError::bad_request(
            "offset",
            format!("offset must be between 0 and {MAX_OFFSET}"),
        ));
    }
    let dead = DeadLetter::list(&core.pool, limit, offset).await?;
    Ok(Json(serde_json::json!({ "dead_letters": dead })))
}
