//! `LoopbackChannel`: a real FfiDispatchChannel with no database behind it (tasker-worker's
//! Loopback). Steps are fed in from Python, results land in an in-memory sink. Tests use it
//! for poll/complete, timeouts and starvation; the benchmark times the FFI round trip.

use crate::channel::{complete_on, poll_channel};
use crate::convert::{count as count_arg, from_py, seconds, to_py_via_json};
use crate::error::NativeError;
use crate::wait::{wait, Waited};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use std::sync::Arc;
use tasker_worker::ffi::{runtime, step_context, Loopback, ProcessBound, MAX_FEED};
use tokio::runtime::Runtime;

struct Inner {
    runtime: Arc<Runtime>,
    loopback: Loopback,
}

#[pyclass(frozen, module = "tasker_core._native")]
pub struct LoopbackChannel {
    inner: ProcessBound<Inner>,
}

impl LoopbackChannel {
    fn inner(&self) -> PyResult<&Inner> {
        Ok(self
            .inner
            .get("LoopbackChannel")
            .map_err(NativeError::from)?)
    }
}

#[pymethods]
impl LoopbackChannel {
    /// `LoopbackChannel(config=None)`: `config` holds FfiDispatchConfig keys
    /// (dispatch_buffer_size, completion_timeout_ms, starvation_warning_threshold_ms, ...);
    /// unset keys take the shipped defaults.
    #[new]
    #[pyo3(signature = (config=None))]
    fn new(config: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let overrides = match config {
            Some(c) if !c.is_none() => from_py(c, "LoopbackChannel config")?,
            _ => serde_json::Map::new(),
        };
        let rt = runtime().map_err(NativeError::from)?;
        let loopback = Loopback::new(rt.handle().clone(), overrides).map_err(NativeError::from)?;
        Ok(Self {
            inner: ProcessBound::new(Inner {
                runtime: rt,
                loopback,
            }),
        })
    }

    /// `feed(count, step)`: queues `count` copies of `step` (a dict of StepContext fields;
    /// missing ones get defaults, each copy a fresh event id and step uuid). Returns at once.
    #[pyo3(signature = (count, step=None))]
    fn feed(&self, count: &Bound<'_, PyAny>, step: Option<&Bound<'_, PyAny>>) -> PyResult<u64> {
        let count = count_arg(count, "feed count", MAX_FEED)?;
        let given = match step {
            Some(s) if !s.is_none() => from_py(s, "step")?,
            _ => serde_json::Map::new(),
        };
        let template = step_context(given).map_err(NativeError::from)?;
        Ok(self
            .inner()?
            .loopback
            .feed(count, template)
            .map_err(NativeError::from)?)
    }

    /// `poll(timeout_seconds)` -> dict or None; waits with the GIL released.
    fn poll<'py>(
        &self,
        py: Python<'py>,
        timeout: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyDict>>> {
        poll_channel(py, &self.inner()?.loopback.ffi, timeout)
    }

    /// `complete(event_id, result)` -> bool; returns at once.
    fn complete(&self, event_id: &Bound<'_, PyAny>, result: &Bound<'_, PyAny>) -> PyResult<bool> {
        complete_on(&self.inner()?.loopback.ffi, event_id, result)
    }

    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_py_via_json(py, &self.inner()?.loopback.ffi.metrics())
    }

    /// Results that reached the sink (completions and sweeper timeouts).
    fn completed_count(&self) -> PyResult<u64> {
        Ok(self.inner()?.loopback.completed_count())
    }

    fn last_result<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let last = self.inner()?.loopback.last_results().pop();
        last.map(|r| to_py_via_json(py, &r)).transpose()
    }

    fn last_results<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let out = PyList::empty(py);
        for r in self.inner()?.loopback.last_results() {
            out.append(to_py_via_json(py, &r)?)?;
        }
        Ok(out)
    }

    /// `wait_for_completions(count, timeout_seconds)` -> True once `count` results reached
    /// the sink, False at the timeout. The GIL is released while waiting.
    fn wait_for_completions(
        &self,
        py: Python<'_>,
        count: &Bound<'_, PyAny>,
        timeout: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        let count = count_arg(count, "wait_for_completions count", u64::from(u32::MAX))?;
        let timeout = seconds(timeout, "wait_for_completions timeout")?;
        let inner = self.inner()?;
        let reached = wait(
            py,
            &inner.runtime,
            timeout,
            inner.loopback.wait_for_completions(count),
        )?;
        Ok(matches!(reached, Waited::Done(())))
    }

    /// One sweeper pass now (the background sweeper also runs on its own period).
    fn sweep(&self) -> PyResult<()> {
        self.inner()?.loopback.ffi.sweep();
        Ok(())
    }

    fn stopped(&self) -> PyResult<bool> {
        Ok(self.inner()?.loopback.ffi.is_closed())
    }

    /// Stops the pump and the sweeper; pollers get None once the buffer is empty.
    fn close(&self) -> PyResult<()> {
        self.inner()?.loopback.close();
        Ok(())
    }
}
