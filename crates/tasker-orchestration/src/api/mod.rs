//! The REST API (axum): tasks, steps, templates, health and metrics; and the dashboard
//! under `/ui` (see [`crate::dashboard`]).

pub(crate) mod auth;
mod dead_letters;
mod error;
mod health;
mod host;
mod paging;
mod tasks;
mod templates;
mod workers;

pub use error::ApiError;

use crate::OrchestrationCore;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, patch};
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tasker_shared::config::OrchestrationConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

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
        .layer(axum::middleware::from_fn_with_state(
            core.clone(),
            host::require_known_host,
        ))
        .with_state(core)
}

/// Why the API was not served.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve on {address} without an API key: anyone who can reach it could \
         create and cancel tasks, complete steps with any result and read every context. \
         Set [orchestration] api_key (or TASKER_ORCHESTRATION__API_KEY), bind a loopback \
         address (127.0.0.1), or accept the risk with `tasker server --insecure-no-auth` \
         ([orchestration] insecure_no_auth = true)"
    )]
    OpenWithoutApiKey { address: SocketAddr },
    #[error("serving the API: {0}")]
    Io(#[from] std::io::Error),
}

/// How a listening address is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Every /v1 request and dashboard page needs the API key.
    ApiKey,
    /// No key, but only this machine can connect.
    Loopback,
    /// No key on an address others can reach: `insecure_no_auth` said so.
    OpenWithoutApiKey,
}

/// Refuses a non-loopback address without an API key unless `insecure_no_auth` is set.
pub fn check_exposure(
    config: &OrchestrationConfig,
    address: SocketAddr,
) -> Result<Exposure, ServeError> {
    if !config.api_key.is_empty() {
        Ok(Exposure::ApiKey)
    } else if address.ip().to_canonical().is_loopback() {
        Ok(Exposure::Loopback)
    } else if config.insecure_no_auth {
        Ok(Exposure::OpenWithoutApiKey)
    } else {
        Err(ServeError::OpenWithoutApiKey { address })
    }
}

/// How long to wait before accepting again after `accept` failed (out of file
/// descriptors, typically), so the loop does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Serves the API until `shutdown` fires, then lets open requests finish for up to
/// `[orchestration] shutdown_timeout_ms`. Refuses to start on an address [`check_exposure`]
/// refuses. At most `max_http_connections` connections are served at once (the rest wait in
/// the listen backlog), and one that does not send a whole request head within
/// `request_header_timeout_ms` is closed.
pub async fn serve(
    core: OrchestrationCore,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let address = listener.local_addr()?;
    let config = core.config.orchestration.clone();
    if check_exposure(&config, address)? == Exposure::OpenWithoutApiKey {
        tracing::error!(
            %address,
            "INSECURE: serving without an API key on an address others can reach \
             (insecure_no_auth); anyone who can connect can create and cancel tasks, \
             complete steps with any result and read every task's context"
        );
    }
    if config.session_secret.is_empty() {
        tracing::info!(
            "dashboard sessions and forms are signed with a secret drawn by this process; \
             behind a load balancer, give every orchestrator the same \
             [orchestration] session_secret"
        );
    }
    let app = router(core);
    let slots = Arc::new(Semaphore::new(config.max_http_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(config.request_header_timeout());
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_RETRY) => continue,
                    }
                }
            },
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(config.shutdown_timeout(), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open API connections did not finish in time; dropping them");
    }
    Ok(())
}
