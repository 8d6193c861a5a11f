//! The REST API (axum): tasks, steps, templates, health and metrics; and the dashboard
//! under `/ui` (see [`crate::dashboard`]).

pub(crate) mod auth;
mod dead_letters;
mod error;
mod health;
mod tasks;
mod templates;
mod workers;

pub use error::ApiError;

use crate::OrchestrationCore;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch};
use axum::Router;

/// The whole API; `/v1` routes require the configured API key when one is set.
pub fn router(core: OrchestrationCore) -> Router {
    let limit = core.config.orchestration.request_body_limit_bytes;
    let v1 = Router::new()
        .route("/tasks", get(tasks::list).post(tasks::create))
        .route("/tasks/{id}", get(tasks::get).delete(tasks::cancel))
        .route("/tasks/{id}/steps", get(tasks::steps))
        .route("/tasks/{id}/steps/{step}", patch(tasks::act_on_step))
        .route("/templates", get(templates::list))
        .route("/workers", get(workers::list))
        .route("/dead_letters", get(dead_letters::list))
        .route_layer(axum::middleware::from_fn_with_state(
            core.clone(),
            auth::require_api_key,
        ));
    Router::new()
        .nest("/v1", v1)
        .merge(crate::dashboard::routes(core.clone()))
        .route("/health", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(core)
}

/// Serves the API until `shutdown` fires.
pub async fn serve(
    core: OrchestrationCore,
    listener: tokio::net::TcpListener,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(core))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
