pub mod config;
pub mod demo;
pub mod demo_db;
pub mod migrate;
pub mod retention;
pub mod server;
pub mod task;
pub mod template;
pub mod worker;

use anyhow::Context;
use tasker_shared::TaskerConfig;

/// The configuration for this process (TASKER_ENV, config files, environment overrides).
pub fn load_config() -> anyhow::Result<TaskerConfig> {
    TaskerConfig::load().context("loading configuration")
}

pub async fn connect(config: &TaskerConfig) -> anyhow::Result<sqlx::PgPool> {
    Ok(tasker_shared::database::connect(&config.database).await?)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
