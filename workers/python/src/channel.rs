//! The poll/complete protocol over an FfiDispatchChannel, shared by `Worker` and
//! `LoopbackChannel`.

use crate::convert::{from_json, polled_step, seconds, to_json, uuid_arg};
use crate::wait::SLICE;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::AtomicBool;
use std::time::Instant;
use tasker_worker::ffi::{FfiDispatchChannel, FfiStepResult};

/// Never set: a poll ends at its timeout (at most [`SLICE`] here) instead, and signals are
/// checked between slices with the GIL held.
static NOT_INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Takes a ready step at once if there is one (no GIL release: a busy worker mostly takes
/// this path); otherwise waits up to `timeout` with the GIL released, a slice at a time so
/// a signal handler (Ctrl-C) on the main thread is not held up. A step is only ever taken
/// inside a slice that then returns it, so an exception from a signal never loses one.
pub fn poll_channel<'py>(
    py: Python<'py>,
    ffi: &FfiDispatchChannel,
    timeout: &Bound<'py, PyAny>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let timeout = seconds(timeout, "poll timeout")?;
    if let Some(step) = ffi.try_poll() {
        return polled_step(py, &step).map(Some);
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || ffi.is_closed() {
            return Ok(None);
        }
        let slice = left.min(SLICE);
        if let Some(step) = py.detach(|| ffi.poll(slice, &NOT_INTERRUPTED)) {
            return polled_step(py, &step).map(Some);
        }
        py.check_signals()?;
    }
}

/// Hands a Python result (a dict in FfiStepResult's shape) to the channel; False for
/// unknown, duplicate or late event ids. A result that cannot become JSON raises
/// ConversionError naming where; the caller fails the step with it as `invalid_result`.
pub fn complete_on(
    ffi: &FfiDispatchChannel,
    event_id: &Bound<'_, PyAny>,
    result: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let id = uuid_arg(event_id, "event_id")?;
    let parsed: FfiStepResult = from_json(to_json(result, "result")?, "result")?;
    Ok(ffi.complete(id, parsed))
}
