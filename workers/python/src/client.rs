//! Module functions: tasks (for `tasker_core.Client`), templates and the database (for
//! setup and tests). Each releases the GIL around its database work.

use crate::convert::{from_py, seconds, to_py, uuid_arg, MAX_TIMEOUT_SECONDS};
use crate::error::NativeError;
use crate::wait::block_on;
use pyo3::prelude::*;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tasker_orchestration::client::TaskClient;
use tasker_orchestration::TaskRequest;
use tasker_shared::config::ConfigOptions;
use tasker_shared::database;
use tasker_shared::template::load_template_dirs;
use tasker_worker::ffi::{runtime, ProcessBound};

/// Upper bound on one client call; the pool's acquire timeout usually fires long before.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

pub fn define(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(create_task, m)?)?;
    m.add_function(wrap_pyfunction!(get_task, m)?)?;
    m.add_function(wrap_pyfunction!(wait_task, m)?)?;
    m.add_function(wrap_pyfunction!(cancel_task, m)?)?;
    m.add_function(wrap_pyfunction!(migrate, m)?)?;
    m.add_function(wrap_pyfunction!(drop_database, m)?)?;
    m.add_function(wrap_pyfunction!(load_templates, m)?)?;
    m.add_function(wrap_pyfunction!(load_config, m)?)?;
    Ok(())
}

/// One pool per distinct configuration, per process. Only touched with the GIL held (and
/// never across a release of it), so a fork never finds it locked.
static CLIENTS: Mutex<Option<ProcessBound<HashMap<String, TaskClient>>>> = Mutex::new(None);

fn rt() -> PyResult<std::sync::Arc<tokio::runtime::Runtime>> {
    Ok(runtime().map_err(NativeError::from)?)
}

fn options(value: Option<&Bound<'_, PyAny>>) -> PyResult<ConfigOptions> {
    match value {
        Some(v) if !v.is_none() => Ok(from_py(v, "options")?),
        _ => Ok(ConfigOptions::default()),
    }
}

fn client(py: Python<'_>, opts: &ConfigOptions) -> PyResult<TaskClient> {
    let key = serde_json::to_string(&json!({
        "url": opts.database_url, "env": opts.environment, "dir": opts.config_dir, "config": opts.config,
    }))
    .map_err(|e| NativeError::native(format!("client cache key: {e}")))?;
    {
        let mut slot = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
        if !slot.as_ref().is_some_and(ProcessBound::in_owner_process) {
            // A forked child starts empty; the parent's pools are leaked by ProcessBound.
            *slot = Some(ProcessBound::new(HashMap::new()));
        }
        if let Some(c) = slot
            .as_ref()
            .and_then(|m| m.get("client cache").ok())
            .and_then(|m| m.get(&key).cloned())
        {
            return Ok(c);
        }
    }
    let config = opts.load().map_err(NativeError::from)?;
    let client = block_on(
        py,
        &*rt()?,
        CALL_TIMEOUT,
        "connecting to the database",
        async move { Ok(TaskClient::connect(&config, "python").await?) },
    )?;
    let mut slot = CLIENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(map) = slot.as_mut().and_then(|b| b.get_mut("client cache").ok()) {
        map.entry(key).or_insert_with(|| client.clone());
    }
    Ok(client)
}

/// `create_task(request, options=None)`: `task_uuid`, `created` (False when the
/// idempotency key was taken), `state`, and `task`, as `get_task` returns it.
#[pyfunction]
#[pyo3(signature = (request, options=None))]
fn create_task<'py>(
    py: Python<'py>,
    request: &Bound<'py, PyAny>,
    options: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let request: TaskRequest = from_py(request, "task request")?;
    let c = client(py, &self::options(options)?)?;
    let value = block_on(py, &*rt()?, CALL_TIMEOUT, "creating the task", async move {
        Ok(c.create(request).await?.to_json()?)
    })?;
    to_py(py, &value)
}

/// `get_task(task_uuid, options=None)`: the task row, `terminal`, and its steps.
#[pyfunction]
#[pyo3(signature = (task_uuid, options=None))]
fn get_task<'py>(
    py: Python<'py>,
    task_uuid: &Bound<'py, PyAny>,
    options: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let id = uuid_arg(task_uuid, "task_uuid")?;
    let c = client(py, &self::options(options)?)?;
    let value = block_on(py, &*rt()?, CALL_TIMEOUT, "reading the task", async move {
        Ok(c.get(id).await?.to_json()?)
    })?;
    to_py(py, &value)
}

/// `wait_task(task_uuid, timeout_seconds, options=None)`: waits, with the GIL released,
/// until the task is terminal or the timeout passes (woken by the database, not by
/// polling), then returns it as `get_task` does.
#[pyfunction]
#[pyo3(signature = (task_uuid, timeout, options=None))]
fn wait_task<'py>(
    py: Python<'py>,
    task_uuid: &Bound<'py, PyAny>,
    timeout: &Bound<'py, PyAny>,
    options: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let id = uuid_arg(task_uuid, "task_uuid")?;
    // Longer waits are cut to the waiter's maximum (a day) rather than refused.
    let timeout = match timeout.extract::<f64>() {
        Ok(s) if s > MAX_TIMEOUT_SECONDS => tasker_shared::task_waiter::MAX_WAIT,
        _ => seconds(timeout, "wait_task timeout")?,
    };
    let c = client(py, &self::options(options)?)?;
    let value = block_on(
        py,
        &*rt()?,
        timeout + CALL_TIMEOUT,
        "waiting for the task",
        async move { Ok(c.wait(id, timeout).await?.to_json()?) },
    )?;
    to_py(py, &value)
}

/// `cancel_task(task_uuid, options=None)`: the cancelled task.
#[pyfunction]
#[pyo3(signature = (task_uuid, options=None))]
fn cancel_task<'py>(
    py: Python<'py>,
    task_uuid: &Bound<'py, PyAny>,
    options: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let id = uuid_arg(task_uuid, "task_uuid")?;
    let c = client(py, &self::options(options)?)?;
    let value = block_on(
        py,
        &*rt()?,
        CALL_TIMEOUT,
        "cancelling the task",
        async move { Ok(c.cancel(id, "python").await?.to_json()?) },
    )?;
    to_py(py, &value)
}

/// `migrate(database_url)`: creates the database if missing, migrates it, installs PGMQ.
#[pyfunction]
fn migrate<'py>(py: Python<'py>, database_url: String) -> PyResult<Bound<'py, PyAny>> {
    let (name, created) = block_on(
        py,
        &*rt()?,
        CALL_TIMEOUT,
        "migrating the database",
        async move { Ok(database::setup_database(&database_url).await?) },
    )?;
    to_py(py, &json!({ "database": name, "created": created }))
}

/// `drop_database(database_url)`: drops the URL's database (terminating its
/// connections); for test suites that create one database per run. Whether it existed.
#[pyfunction]
fn drop_database(py: Python<'_>, database_url: String) -> PyResult<bool> {
    block_on(
        py,
        &*rt()?,
        CALL_TIMEOUT,
        "dropping the database",
        async move { Ok(database::drop_database(&database_url).await?) },
    )
}

/// `load_templates(paths, environment=None)`: every template as it applies in
/// `environment`, as `{path, template}`; raises TemplateError naming the first bad file.
#[pyfunction]
#[pyo3(signature = (paths, environment=None))]
fn load_templates(
    py: Python<'_>,
    paths: Vec<PathBuf>,
    environment: Option<String>,
) -> PyResult<Bound<'_, PyAny>> {
    let env = ConfigOptions {
        environment,
        ..Default::default()
    }
    .environment();
    let templates = load_template_dirs(&paths).map_err(NativeError::from)?;
    let list: Vec<serde_json::Value> = templates
        .into_iter()
        .map(|(path, t)| json!({ "path": path, "template": t.for_environment(&env) }))
        .collect();
    to_py(py, &serde_json::Value::Array(list))
}

/// `load_config(options=None)`: the merged configuration as a dict (what a worker would
/// use), with its `environment`.
#[pyfunction]
#[pyo3(signature = (options=None))]
fn load_config<'py>(
    py: Python<'py>,
    options: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let opts = self::options(options)?;
    let config = opts.load().map_err(NativeError::from)?;
    let mut value = serde_json::to_value(&config)
        .map_err(|e| NativeError::native(format!("serializing configuration: {e}")))?;
    value["environment"] = json!(opts.environment());
    to_py(py, &value)
}
