//! `Worker`: a worker core dispatching to Python through the FfiDispatchChannel
//! (tasker-worker's FfiWorker), optionally with orchestration embedded in the process.

use crate::channel::{complete_on, poll_channel};
use crate::convert::{from_py, seconds, to_py, to_py_via_json};
use crate::error::NativeError;
use crate::wait::{block_on, wait, Waited};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tasker_orchestration::{OrchestrationCore, OrchestrationHandle};
use tasker_shared::config::ConfigOptions;
use tasker_shared::template::load_template_dirs;
use tasker_shared::TaskerConfig;
use tasker_worker::ffi::{runtime, FfiWorker, FfiWorkerOptions, ProcessBound};
use tokio::runtime::Runtime;

/// Starting connects, registers templates and creates queues; this bounds all of it.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Beyond the caller's deadline, what the worker's own shutdown may still take (its
/// completion processor gets up to 30 s to record what was handed in).
const STOP_GRACE: Duration = Duration::from_secs(40);
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

pub fn define(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(start_worker, m)?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartOptions {
    namespaces: Vec<String>,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    config_dir: Option<PathBuf>,
    #[serde(default)]
    config: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    template_paths: Vec<PathBuf>,
    #[serde(default)]
    embedded_orchestration: bool,
    #[serde(default)]
    worker_id: Option<String>,
}

struct Inner {
    runtime: Arc<Runtime>,
    worker: Arc<FfiWorker>,
    config: TaskerConfig,
    /// Taken by `stop`, which shuts it down after the worker.
    orchestration: Mutex<Option<OrchestrationHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Collected without `stop`: shut down in the background rather than leave the
        // worker claiming steps nobody will run.
        let orchestration = self
            .orchestration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = self.worker.take_for_shutdown() {
            let deadline = self.config.worker.shutdown_timeout();
            let orchestration_deadline = self.config.orchestration.shutdown_timeout();
            self.runtime.spawn(async move {
                handle.shutdown_within(deadline).await;
                if let Some(o) = orchestration {
                    o.shutdown(orchestration_deadline).await;
                }
            });
        }
    }
}

#[pyclass(frozen, module = "tasker_core._native")]
pub struct Worker {
    inner: ProcessBound<Inner>,
}

/// `start_worker(options)`: options as in StartOptions.
#[pyfunction]
fn start_worker(py: Python<'_>, options: &Bound<'_, PyAny>) -> PyResult<Worker> {
    let opts: StartOptions = from_py(options, "start_worker options")?;
    if opts.namespaces.is_empty() {
        return Err(NativeError::value(
            "start_worker options.namespaces: must name at least one namespace",
        )
        .into());
    }
    let config_options = ConfigOptions {
        database_url: opts.database_url.clone(),
        environment: opts.environment.clone(),
        config_dir: opts.config_dir.clone(),
        config: opts.config.clone(),
    };
    let environment = config_options.environment();
    let config = config_options.load().map_err(NativeError::from)?;
    let templates = if opts.template_paths.is_empty() {
        Vec::new()
    } else {
        load_template_dirs(&opts.template_paths).map_err(NativeError::from)?
    };
    let rt = runtime().map_err(NativeError::from)?;
    let worker_config = config.clone();
    let options = FfiWorkerOptions {
        namespaces: opts.namespaces,
        templates: templates
            .iter()
            .map(|(_, t)| t.for_environment(&environment))
            .collect(),
        worker_id: opts.worker_id,
    };
    let embedded = opts.embedded_orchestration;
    let (worker, orchestration) =
        block_on(py, &rt, START_TIMEOUT, "starting the worker", async move {
            let config = worker_config;
            let (worker, pool) = FfiWorker::start(&config, options).await?;
            let orchestration = if embedded {
                Some(OrchestrationCore::new(pool, config).await.start())
            } else {
                None
            };
            Ok((worker, orchestration))
        })?;
    Ok(Worker {
        inner: ProcessBound::new(Inner {
            runtime: rt,
            worker: Arc::new(worker),
            config,
            orchestration: Mutex::new(orchestration),
        }),
    })
}

impl Worker {
    fn inner(&self) -> PyResult<&Inner> {
        Ok(self
            .inner
            .get("tasker_core Worker")
            .map_err(NativeError::from)?)
    }
}

#[pymethods]
impl Worker {
    /// `poll(timeout_seconds)` -> dict or None; waits with the GIL released.
    fn poll<'py>(
        &self,
        py: Python<'py>,
        timeout: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        poll_channel(py, &self.inner()?.worker.ffi, timeout)
    }

    /// `complete(event_id, result)` -> bool; returns at once.
    fn complete(&self, event_id: &Bound<'_, PyAny>, result: &Bound<'_, PyAny>) -> PyResult<bool> {
        complete_on(&self.inner()?.worker.ffi, event_id, result)
    }

    fn ffi_metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_via_json(py, &self.inner()?.worker.ffi.metrics())
    }

    /// The worker's own counters, or `running: False` once stopped.
    fn status<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner()?;
        let worker = inner.worker.clone();
        let status = match wait(py, &inner.runtime, STATUS_TIMEOUT, async move {
            worker.status().await
        })? {
            Waited::Done(s) => s,
            Waited::TimedOut => {
                return Err(NativeError::timeout("worker status did not arrive within 5 s").into())
            }
        };
        let running = status.is_some();
        let mut value = match status {
            Some(s) => serde_json::to_value(s).map_err(|e| NativeError::native(e.to_string()))?,
            None => serde_json::json!({ "worker_id": inner.worker.worker_id }),
        };
        value["running"] = serde_json::json!(running);
        value["events_dropped"] = serde_json::json!(inner.worker.events_dropped());
        to_py(py, &value)
    }

    /// `poll_event(timeout_seconds)` -> the next `fast` domain event as a dict; None when
    /// none came within the timeout; False once the worker has stopped and every event has
    /// been taken.
    fn poll_event<'py>(
        &self,
        py: Python<'py>,
        timeout: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let inner = self.inner()?;
        let timeout = seconds(timeout, "poll_event timeout")?;
        let worker = inner.worker.clone();
        match wait(py, &inner.runtime, timeout, async move {
            worker.next_event().await
        })? {
            Waited::Done(Some(event)) => to_py_via_json(py, &event),
            Waited::Done(None) => Ok(pyo3::types::PyBool::new(py, false).to_owned().into_any()),
            Waited::TimedOut => Ok(py.None().into_bound(py)),
        }
    }

    /// `stop(timeout_seconds)`: stops claiming, lets Python finish what it polled until the
    /// deadline, records the results, hands back the rest, then stops embedded
    /// orchestration. False when already stopped.
    fn stop(&self, py: Python<'_>, timeout: &Bound<'_, PyAny>) -> PyResult<bool> {
        let inner = self.inner()?;
        let deadline = seconds(timeout, "stop timeout")?;
        let Some(handle) = inner.worker.take_for_shutdown() else {
            return Ok(false);
        };
        let orchestration = inner
            .orchestration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let orchestration_deadline = inner
            .config
            .orchestration
            .shutdown_timeout()
            .min(deadline.max(Duration::from_secs(1)));
        // Spawned, so that an interrupted wait (a second Ctrl-C) leaves the shutdown running
        // instead of abandoning it half done.
        let done = inner.runtime.spawn(async move {
            handle.shutdown_within(deadline).await;
            if let Some(o) = orchestration {
                o.shutdown(orchestration_deadline).await;
            }
        });
        let limit = deadline + orchestration_deadline + STOP_GRACE;
        match wait(py, &inner.runtime, limit, done)? {
            Waited::Done(Ok(())) => Ok(true),
            Waited::Done(Err(e)) => {
                Err(NativeError::worker(format!("worker shutdown failed: {e}")).into())
            }
            Waited::TimedOut => Err(NativeError::timeout(format!(
                "worker shutdown did not finish within {} s",
                limit.as_secs_f64()
            ))
            .into()),
        }
    }

    /// True once `stop` has begun or the channel stopped handing out steps.
    fn stopped(&self) -> PyResult<bool> {
        Ok(self.inner()?.worker.is_stopped())
    }

    fn worker_id(&self) -> PyResult<String> {
        Ok(self.inner()?.worker.worker_id.clone())
    }

    /// The configuration the worker runs with, as a dict.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_via_json(py, &self.inner()?.config)
    }
}
