//! `GET /v1/dead_letters`: steps failed because their worker was lost on their last attempt.

use super::paging::page;
use super::ApiError;
use crate::OrchestrationCore;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use tasker_shared::models::DeadLetter;

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
    let (limit, offset) = page(p.limit, p.offset, "reset or resolve the older ones first")?;
    let dead = DeadLetter::list(&core.pool, limit, offset).await?;
    Ok(Json(serde_json::json!({ "dead_letters": dead })))
}
