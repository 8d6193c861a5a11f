//! A worker process's /health and /metrics.

use super::commands::WorkerCommand;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub fn router(commands: mpsc::Sender<WorkerCommand>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(commands)
}

async fn health(State(commands): State<mpsc::Sender<WorkerCommand>>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    if commands
        .send(WorkerCommand::GetStatus { reply: tx })
        .await
        .is_err()
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "stopping"})),
        );
    }
    match tokio::time::timeout(Duration::from_secs(5), rx).await {
        Ok(Ok(status)) => (
            StatusCode::OK,
            Json(serde_json::json!({"status": "healthy", "worker": status})),
        ),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unresponsive"})),
        ),
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        tasker_shared::observability::render(),
    )
}
