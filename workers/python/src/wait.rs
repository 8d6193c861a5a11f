//! Waiting on the runtime with the GIL released.
//!
//! Every blocking wait in the extension goes through [`wait`]: other Python threads run
//! while it waits. Python runs signal handlers (Ctrl-C's KeyboardInterrupt) only on the
//! main thread and only between bytecodes, so a long wait is cut into slices, and the
//! signals are checked between them: Ctrl-C is never held up by a wait.

use crate::error::NativeError;
use pyo3::prelude::*;
use std::future::Future;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

/// Longest stretch without the GIL before signals are checked again.
pub const SLICE: Duration = Duration::from_millis(100);

/// How an interruptible wait ended.
pub enum Waited<T> {
    Done(T),
    TimedOut,
}

/// Drives `fut` on the runtime with the GIL released, until it finishes or `timeout`
/// passes; a signal handler's exception (KeyboardInterrupt) ends the wait and drops the
/// future.
pub fn wait<F>(
    py: Python<'_>,
    runtime: &Runtime,
    timeout: Duration,
    fut: F,
) -> PyResult<Waited<F::Output>>
where
    F: Future + Send,
    F::Output: Send,
{
    let deadline = Instant::now() + timeout;
    let mut fut = Box::pin(fut);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let slice = left.min(SLICE);
        let done = py.detach(|| {
            runtime.block_on(async { tokio::time::timeout(slice, fut.as_mut()).await.ok() })
        });
        if let Some(v) = done {
            return Ok(Waited::Done(v));
        }
        if left <= SLICE {
            return Ok(Waited::TimedOut);
        }
        py.check_signals()?;
    }
}

/// [`wait`] for work that must finish: a timeout is an error naming `what`.
pub fn block_on<F, T>(
    py: Python<'_>,
    runtime: &Runtime,
    timeout: Duration,
    what: &str,
    fut: F,
) -> PyResult<T>
where
    F: Future<Output = Result<T, NativeError>> + Send,
    T: Send,
{
    match wait(py, runtime, timeout, fut)? {
        Waited::Done(r) => r.map_err(Into::into),
        Waited::TimedOut => Err(NativeError::timeout(format!(
            "{what} did not finish within {} s",
            timeout.as_secs_f64()
        ))
        .into()),
    }
}
