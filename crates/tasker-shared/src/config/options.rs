//! Configuration for a language binding (the Ruby and Python extensions): the TOML layers
//! (embedded base, `<config_dir>/base`, `<config_dir>/environments/<env>`), then the
//! process environment, then what the host language set.

use super::{ConfigError, ConfigLoader};
use crate::TaskerConfig;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What a binding's configuration (Ruby's `TaskerCore.configure`, Python's keyword
/// arguments) passes down.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigOptions {
    #[serde(default)]
    pub database_url: Option<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default)]
    pub config_dir: Option<PathBuf>,
    /// Dotted keys (`worker.mpsc_channels.handler_dispatch.max_concurrent_handlers`) set
    /// above every other layer.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

impl ConfigOptions {
    /// The environment: the option, else `TASKER_ENV`, else `development`.
    pub fn environment(&self) -> String {
        self.environment
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| std::env::var("TASKER_ENV").ok().filter(|e| !e.is_empty()))
            .unwrap_or_else(|| "development".into())
    }

    /// The config directory: the option, else `TASKER_CONFIG_DIR`, else `./config/tasker`
    /// when it exists (else only the base compiled into the extension).
    fn config_dir(&self) -> Option<PathBuf> {
        self.config_dir
            .clone()
            .or_else(|| std::env::var_os("TASKER_CONFIG_DIR").map(PathBuf::from))
            .or_else(|| {
                let d = PathBuf::from("config/tasker");
                d.is_dir().then_some(d)
            })
    }

    pub fn load(&self) -> Result<TaskerConfig, ConfigError> {
        let environment = self.environment();
        let dir = self.config_dir();
        let mut loader = ConfigLoader::new(dir.as_deref(), &environment);
        if let Some(url) = self.database_url.as_ref().filter(|u| !u.is_empty()) {
            loader = loader.set("database.url", url.clone());
        }
        for (key, value) in &self.config {
            loader = loader.set(key, toml_value(key, value)?);
        }
        loader.load()
    }
}

fn toml_value(key: &str, value: &serde_json::Value) -> Result<toml::Value, ConfigError> {
    use serde_json::Value as J;
    Ok(match value {
        J::Null => {
            return Err(ConfigError::InvalidValue {
                key: key.to_string(),
                reason: "null (nil, None) is not a value".into(),
            })
        }
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(items) => toml::Value::Array(
            items
                .iter()
                .map(|v| toml_value(key, v))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(map) => toml::Value::Table(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), toml_value(&format!("{key}.{k}"), v)?)))
                .collect::<Result<_, ConfigError>>()?,
        ),
    })
}
