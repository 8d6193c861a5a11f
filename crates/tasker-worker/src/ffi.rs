//! What a language binding (the Ruby and the Python extension) needs of the worker core, and
//! nothing more; a binding imports from tasker-worker only through here.
//!
//! - start: [`FfiWorker::start`] with [`FfiWorkerOptions`], failing with [`FfiWorkerError`];
//! - poll and complete: [`FfiDispatchChannel::poll`] hands out a [`PolledStep`],
//!   [`FfiDispatchChannel::complete`] takes an [`FfiStepResult`];
//! - stop: [`FfiWorker::take_for_shutdown`] gives the [`WorkerHandle`] to shut down;
//! - status and metrics: [`FfiWorker::status`] ([`WorkerStatus`]),
//!   [`FfiDispatchChannel::metrics`] ([`FfiMetrics`]);
//! - the process's runtime and the fork guard: [`runtime`], [`ProcessBound`],
//!   [`install_fork_hook`];
//! - log output: [`init_logging`];
//! - a channel with no database behind it, for the bindings' tests and benchmarks:
//!   [`Loopback`];
//! - what kind of failure an error is, for the binding to pick its exception class:
//!   [`ErrorKind`] through [`Classify`] (implemented here for the errors above, in
//!   tasker-shared and tasker-orchestration for theirs).

pub use crate::worker::commands::WorkerStatus;
pub use crate::worker::ffi_logging::init as init_logging;
pub use crate::worker::ffi_runtime::{
    install_fork_hook, runtime, ForkedError, ProcessBound, RuntimeError,
};
pub use crate::worker::ffi_worker::{FfiWorker, FfiWorkerError, FfiWorkerOptions};
pub use crate::worker::handlers::ffi_dispatch_channel::{
    FfiDispatchChannel, FfiError, FfiMetrics, FfiStepResult, PolledStep,
};
pub use crate::worker::handlers::ffi_loopback::{step_context, Loopback, LoopbackError, MAX_FEED};
pub use crate::WorkerHandle;
pub use tasker_shared::{Classify, ErrorKind};

impl Classify for FfiWorkerError {
    fn kind(&self) -> ErrorKind {
        match self {
            FfiWorkerError::Database(e) => e.kind(),
            FfiWorkerError::Template { source, .. } => source.kind(),
            FfiWorkerError::Start(_) | FfiWorkerError::NoChannel => ErrorKind::Worker,
        }
    }
}

impl Classify for LoopbackError {
    fn kind(&self) -> ErrorKind {
        match self {
            LoopbackError::InvalidSetting { .. } | LoopbackError::TooMany(_) => {
                ErrorKind::InvalidArgument
            }
            LoopbackError::Config(e) => e.kind(),
            LoopbackError::UnknownField(_) | LoopbackError::InvalidStep(_) => ErrorKind::Conversion,
            LoopbackError::Closed => ErrorKind::Worker,
        }
    }
}

impl Classify for ForkedError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Fork
    }
}

impl Classify for RuntimeError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}
