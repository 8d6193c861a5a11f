//! The Python extension: `tasker_core._native`, embedding the Tasker worker core (and, when
//! asked, orchestration) in a Python process.
//!
//! Python handler threads poll the same FfiDispatchChannel the Ruby extension uses, with
//! the GIL released, and hand results back without waiting; tokio runs everything else on
//! a runtime the extension owns. No Rust thread ever calls into Python.

mod channel;
mod client;
mod convert;
mod error;
mod loopback_channel;
mod wait;
mod worker;

use pyo3::prelude::*;

/// Step payloads are cloned and freed across the runtime's threads and Python's; mimalloc
/// handles that traffic better than the system allocator. Python keeps its own.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    tasker_worker::ffi::init_logging();
    tasker_worker::ffi::install_fork_hook().map_err(error::NativeError::from)?;
    error::define(m)?;
    m.add_class::<worker::Worker>()?;
    m.add_class::<loopback_channel::LoopbackChannel>()?;
    worker::define(m)?;
    client::define(m)?;
    m.add("VERSION", env!("CARGO_PKG_VERSION"))?;
    // The limits the Python library checks its own arguments against.
    m.add("MAX_TIMEOUT_SECONDS", convert::MAX_TIMEOUT_SECONDS)?;
    m.add(
        "MAX_CONCURRENCY",
        tasker_shared::config::MAX_CONCURRENT_HANDLERS,
    )?;
    Ok(())
}
