pub mod config;
pub mod migrate;
pub mod template;

use anyhow::Context;
use tasker_shared::TaskerConfig;

/// The configuration for this process, with `--database-url` style overrides applied.
pub fn load_config() -> anyhow::Result<TaskerConfig> {
    TaskerConfig::load().context("loading configuration")
}

pub async fn connect(config: &TaskerConfig) -> anyhow::Result<sqlx::PgPool> {
    Ok(tasker_shared::database::connect(&config.database).await?)
}
