//! The extension's tokio runtime and fork guard (shared with the Python binding, in
//! tasker-worker), with their errors as Ruby exceptions.

use crate::error::{native_error, NativeError};
use std::sync::Arc;
use tasker_worker::ffi::{self, ForkedError};
use tokio::runtime::Runtime;

pub use tasker_worker::ffi::ProcessBound;

pub fn install_fork_hook() -> Result<(), magnus::Error> {
    ffi::install_fork_hook().map_err(|e| native_error(e.to_string()))
}

pub fn runtime() -> Result<Arc<Runtime>, magnus::Error> {
    ffi::runtime().map_err(|e| native_error(e.to_string()))
}

impl From<ForkedError> for NativeError {
    fn from(e: ForkedError) -> Self {
        Self::new(crate::error::Kind::Fork, e.to_string())
    }
}
