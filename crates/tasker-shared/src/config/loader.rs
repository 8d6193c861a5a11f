use super::TaskerConfig;
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use std::path::{Path, PathBuf};

/// The base configuration compiled into every Tasker binary and the Ruby extension, so a
/// process with no config directory still has every key.
const EMBEDDED_BASE: &[&str] = &[
    include_str!("../../../../config/tasker/base/common.toml"),
    include_str!("../../../../config/tasker/base/orchestration.toml"),
    include_str!("../../../../config/tasker/base/worker.toml"),
];

/// Top-level sections; environment variables are only read for these, so unrelated
/// `TASKER_*` variables (TASKER_ENV, TASKER_TEMPLATE_PATH, ...) are not mistaken for keys.
const SECTIONS: &[&str] = &[
    "database",
    "queues",
    "backoff",
    "orchestration",
    "worker",
    "retention",
];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    #[error("configuration key '{key}': {reason}")]
    InvalidValue { key: String, reason: String },
    #[error("configuration directory {path}: {reason}")]
    Directory { path: PathBuf, reason: String },
}

impl From<figment::Error> for ConfigError {
    fn from(e: figment::Error) -> Self {
        ConfigError::Load(Box::new(e))
    }
}

/// Builds a [`TaskerConfig`] from its layers.
#[derive(Debug, Clone)]
pub struct ConfigLoader {
    dir: Option<PathBuf>,
    environment: String,
    use_process_env: bool,
    overrides: Vec<(String, toml::Value)>,
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::from_env()
    }
}

impl ConfigLoader {
    /// `TASKER_ENV` (default `development`) and `TASKER_CONFIG_DIR` (default `config/tasker`
    /// when it exists) from the process environment.
    pub fn from_env() -> Self {
        let environment = std::env::var("TASKER_ENV").unwrap_or_else(|_| "development".into());
        let dir = std::env::var_os("TASKER_CONFIG_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                let d = PathBuf::from("config/tasker");
                d.is_dir().then_some(d)
            });
        Self {
            dir,
            environment,
            use_process_env: true,
            overrides: Vec::new(),
        }
    }

    /// The given directory and environment, layered with the process environment
    /// (`TASKER_<SECTION>__<KEY>`, `DATABASE_URL`) like [`ConfigLoader::from_env`].
    pub fn new(dir: Option<&Path>, environment: &str) -> Self {
        Self {
            dir: dir.map(Path::to_path_buf),
            environment: environment.to_string(),
            use_process_env: true,
            overrides: Vec::new(),
        }
    }

    /// Only the given directory and environment; the process environment is ignored.
    pub fn isolated(dir: Option<&Path>, environment: &str) -> Self {
        Self {
            dir: dir.map(Path::to_path_buf),
            environment: environment.to_string(),
            use_process_env: false,
            overrides: Vec::new(),
        }
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    /// Sets one dotted key (`worker.mpsc_channels.handler_dispatch.max_concurrent_handlers`)
    /// above every other layer; used by the Ruby `TaskerCore.configure` block and tests.
    pub fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.overrides.push((key.to_string(), value.into()));
        self
    }

    pub fn load(&self) -> Result<TaskerConfig, ConfigError> {
        let mut figment = Figment::new();
        for text in EMBEDDED_BASE {
            figment = figment.merge(Toml::string(text));
        }
        if let Some(dir) = &self.dir {
            if !dir.is_dir() {
                return Err(ConfigError::Directory {
                    path: dir.clone(),
                    reason: "is not a directory".into(),
                });
            }
            for file in toml_files(&dir.join("base"))? {
                figment = figment.merge(Toml::file_exact(file));
            }
            for file in toml_files(&dir.join("environments").join(&self.environment))? {
                figment = figment.merge(Toml::file_exact(file));
            }
        }
        if self.use_process_env {
            figment = figment.merge(Env::prefixed("TASKER_").split("__").filter(|key| {
                let key = key.as_str().to_ascii_lowercase();
                SECTIONS.iter().any(|s| key.starts_with(&format!("{s}.")))
            }));
            if let Ok(url) = std::env::var("DATABASE_URL") {
                figment = figment.merge(("database.url", url));
            }
        }
        for (key, value) in &self.overrides {
            figment = figment.merge((key.as_str(), value.clone()));
        }
        let config: TaskerConfig = figment.extract()?;
        config.validate()?;
        Ok(config)
    }
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ConfigError::Directory {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    Ok(files)
}

impl TaskerConfig {
    /// The configuration for the current process environment.
    pub fn load() -> Result<Self, ConfigError> {
        ConfigLoader::from_env().load()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn embedded_base_has_every_seed_key() {
        let c = ConfigLoader::isolated(None, "development").load().unwrap();
        let hd = &c.worker.mpsc_channels.handler_dispatch;
        assert_eq!(
            (
                hd.dispatch_buffer_size,
                hd.completion_buffer_size,
                hd.max_concurrent_handlers,
                hd.handler_timeout_ms
            ),
            (1000, 1000, 10, 30000)
        );
        let ffi = &c.worker.mpsc_channels.ffi_dispatch;
        assert_eq!(
            (
                ffi.dispatch_buffer_size,
                ffi.completion_timeout_ms,
                ffi.timeout_grace_ms,
                ffi.starvation_warning_threshold_ms,
                ffi.callback_timeout_ms
            ),
            (1000, 30000, 5000, 10000, 5000)
        );
    }

    #[test]
    fn environment_files_override_base_files() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base/worker.toml",
            "[worker.mpsc_channels.handler_dispatch]\nmax_concurrent_handlers = 4\n",
        );
        write(
            dir.path(),
            "environments/test/worker.toml",
            "[worker.mpsc_channels.handler_dispatch]\nhandler_timeout_ms = 1234\n",
        );
        let c = ConfigLoader::isolated(Some(dir.path()), "test")
            .load()
            .unwrap();
        let hd = &c.worker.mpsc_channels.handler_dispatch;
        assert_eq!(hd.max_concurrent_handlers, 4);
        assert_eq!(hd.handler_timeout_ms, 1234);
        let prod = ConfigLoader::isolated(Some(dir.path()), "production")
            .load()
            .unwrap();
        assert_eq!(
            prod.worker
                .mpsc_channels
                .handler_dispatch
                .handler_timeout_ms,
            30000
        );
    }

    #[test]
    fn unknown_key_is_refused_with_its_name_and_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base/worker.toml",
            "[worker.mpsc_channels.handler_dispatch]\nmax_concurent_handlers = 4\n",
        );
        let err = ConfigLoader::isolated(Some(dir.path()), "test")
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_concurent_handlers"), "{err}");
        assert!(err.contains("worker.toml"), "{err}");
    }

    #[test]
    fn bad_value_is_refused_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "base/common.toml",
            "[backoff]\njitter_ratio = 3.0\n",
        );
        let err = ConfigLoader::isolated(Some(dir.path()), "test")
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("backoff.jitter_ratio"), "{err}");
        write(
            dir.path(),
            "base/common.toml",
            "[database]\nmax_connections = \"many\"\n",
        );
        let err = ConfigLoader::isolated(Some(dir.path()), "test")
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_connections"), "{err}");
        write(
            dir.path(),
            "base/common.toml",
            "[retention]\ncomplete_after = \"7w\"\n",
        );
        let err = ConfigLoader::isolated(Some(dir.path()), "test")
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retention.complete_after") && err.contains("'7w' is not a period"),
            "{err}"
        );
        write(
            dir.path(),
            "base/common.toml",
            "[retention]\nbatch_size = 0\n",
        );
        let err = ConfigLoader::isolated(Some(dir.path()), "test")
            .load()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("retention.batch_size") && err.contains("0 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn programmatic_override_wins() {
        let c = ConfigLoader::isolated(None, "test")
            .set(
                "worker.mpsc_channels.handler_dispatch.max_concurrent_handlers",
                3,
            )
            .load()
            .unwrap();
        assert_eq!(
            c.worker
                .mpsc_channels
                .handler_dispatch
                .max_concurrent_handlers,
            3
        );
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn process_environment_overrides_single_keys() {
        // Figment's jail isolates the environment of this test from the others.
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "TASKER_WORKER__MPSC_CHANNELS__HANDLER_DISPATCH__MAX_CONCURRENT_HANDLERS",
                "7",
            );
            jail.set_env("TASKER_ENV", "test");
            jail.set_env("TASKER_TEMPLATE_PATH", "/nowhere");
            jail.set_env("DATABASE_URL", "postgresql://example/db");
            let mut loader = ConfigLoader::from_env();
            loader.dir = None;
            let c = loader.load().map_err(|e| e.to_string())?;
            assert_eq!(
                c.worker
                    .mpsc_channels
                    .handler_dispatch
                    .max_concurrent_handlers,
                7
            );
            assert_eq!(c.database.url, "postgresql://example/db");
            Ok(())
        });
    }
}
