//! The extension's tokio runtime and fork guard (shared with the Python binding, in
//! tasker-worker), with their errors as Ruby exceptions.

use crate::error::NativeError;
use std::sync::Arc;
use tasker_worker::ffi;
use tokio::runtime::Runtime;

pub use tasker_worker::ffi::ProcessBound;

pub fn install_fork_hook() -> Result<(), magnus::Error> {
    Ok(ffi::install_fork_hook().map_err(NativeError::from)?)
}

pub fn runtime() -> Result<Arc<Runtime>, magnus::Error> {
    Ok(ffi::runtime().map_err(NativeError::from)?)
}
