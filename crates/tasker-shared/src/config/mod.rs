//! Layered configuration: the base TOML shipped with Tasker, then `<dir>/base/*.toml`, then
//! `<dir>/environments/<TASKER_ENV>/*.toml`, then single keys from the environment
//! (`TASKER_<SECTION>__<KEY>`, `__` between levels) and `DATABASE_URL`.
//!
//! Every struct refuses unknown keys, so a misspelt key is an error naming the key and the
//! file it came from instead of a setting silently ignored.

mod loader;
mod options;
mod retention;
mod types;

pub use loader::{ConfigError, ConfigLoader};
pub use options::ConfigOptions;
pub use retention::{Period, PeriodError, RetentionConfig, RetentionMode, MIN_PERIOD_SECONDS};
pub use types::*;
