use crate::OrchestrationCore;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Json;

pub async fn live() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "healthy" }))
}

/// Ready when the database answers.
pub async fn ready(State(core): State<OrchestrationCore>) -> impl IntoResponse {
    match sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&core.pool)
        .await
    {
        Ok(_) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "database": "ok" })),
        ),
        Err(e) => {
            // The cause (host names, credentials' user) goes to the log only.
            tracing::warn!(error = %e, "readiness check: the database did not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "not_ready", "database": "unavailable" })),
            )
        }
    }
}

pub async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        tasker_shared::observability::render(),
    )
}
