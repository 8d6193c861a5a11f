//! The TaskClient (a database pool) the module functions share, one per configuration.

use super::nogvl::block_on;
use super::runtime::{runtime, ProcessBound};
use super::CALL_TIMEOUT;
use crate::error::NativeError;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use tasker_orchestration::client::TaskClient;
use tasker_shared::config::ConfigOptions;

/// One pool per distinct configuration, per process. Only touched with the GVL held, so a
/// fork never finds it locked.
static CLIENTS: Mutex<Option<ProcessBound<HashMap<String, TaskClient>>>> = Mutex::new(None);

fn cached(key: &str) -> Option<TaskClient> {
    let mut slot = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if !slot.as_ref().is_some_and(ProcessBound::in_owner_process) {
        // A forked child starts empty; the parent's pools are leaked by ProcessBound.
        *slot = Some(ProcessBound::new(HashMap::new()));
    }
    slot.as_ref()
        .and_then(|m| m.get("client cache").ok())
        .and_then(|m| m.get(key).cloned())
}

fn remember(key: String, client: TaskClient) {
    let mut slot = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bound) = slot.as_mut() {
        if let Ok(map) = bound.get_mut("client cache") {
            map.entry(key).or_insert(client);
        }
    }
}

/// The client for `opts`, connecting (with the GVL released) on first use.
pub fn client(opts: &ConfigOptions) -> Result<TaskClient, magnus::Error> {
    let key = serde_json::to_string(&json!({
        "url": opts.database_url, "env": opts.environment, "dir": opts.config_dir, "config": opts.config,
    }))
    .map_err(|e| NativeError::native(format!("client cache key: {e}")))?;
    if let Some(c) = cached(&key) {
        return Ok(c);
    }
    let config = opts.load().map_err(NativeError::from)?;
    let rt = runtime()?;
    let client = block_on(
        &rt,
        CALL_TIMEOUT,
        "connecting to the database",
        async move { Ok(TaskClient::connect(&config, "ruby").await?) },
    )?;
    remember(key, client.clone());
    Ok(client)
}
