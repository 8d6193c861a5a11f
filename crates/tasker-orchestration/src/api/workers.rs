use super::ApiError;
use crate::OrchestrationCore;
use axum::extract::State;
use axum::Json;
use tasker_shared::models::WorkerRow;

/// The worker registry: every live worker process, with the steps it holds.
pub async fn list(
    State(core): State<OrchestrationCore>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let workers = WorkerRow::list(&core.pool).await?;
    Ok(Json(serde_json::json!({ "workers": workers })))
}
