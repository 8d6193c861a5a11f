//! The Tasker worker core: the dual-channel, fire-and-forget step execution pipeline.
//!
//! ```text
//! WorkerEventSystem -> ActorCommandProcessor -> StepExecutorActor (read + claim)
//!     -> HANDLER DISPATCH CHANNEL -> HandlerDispatchService (Rust) | FfiDispatchChannel (Ruby)
//!     -> COMPLETION CHANNEL -> CompletionProcessorService (record) -> PostHandlerCallback
//! ```
//!
//! # Layout
//!
//! Only `ffi` is a public module; everything else is private, and what other crates use is
//! re-exported here at the root.
//!
//! - `ffi`: the façade a language binding (Ruby, Python) uses, and the only one it uses.
//! - `step`: what a handler gets and returns (`StepContext`, `HandlerOutput`, `HandlerError`).
//! - `worker::core`: `WorkerCore::start` wires everything below; `WorkerHandle` stops it.
//! - `worker::event_system`, `worker::actor_command_processor`, `worker::actors`: waking,
//!   commands, reading and claiming.
//! - `worker::handlers`: dispatch to Rust handlers (`dispatch_service`, `registry`), to foreign
//!   ones (`ffi_dispatch_channel`, `ffi_loopback`), and recording (`completion_processor`).
//! - `worker::ffi_worker`, `worker::ffi_runtime`, `worker::ffi_logging`: a worker, a runtime
//!   and log output for a binding (all reached through `ffi`).
//! - `worker::registration`, `worker::heartbeat`, `worker::in_flight`, `worker::creation_claims`:
//!   liveness, leases, what the worker holds, roots claimed at creation.
//! - `worker::domain_event_callback`, `worker::http` (`http_router`), `worker::worker_metrics`:
//!   events, the worker's `/health` and `/metrics`, metric names.

pub mod ffi;
mod step;
mod worker;

pub use step::{batch_ranges, DispatchedStep, HandlerError, HandlerOutput, StepContext};
pub use worker::commands::WorkerStatus;
pub use worker::core::{Dispatch, WorkerCore, WorkerHandle, WorkerOptions, WorkerStartError};
pub use worker::handlers::dispatch_service::{CompletedStep, PostHandlerCallback};
pub use worker::handlers::registry::{HandlerRegistry, StepHandler};
pub use worker::http::router as http_router;

// Pieces of the pipeline that tests and the dispatch benchmark drive on their own.
pub use worker::actors::step_executor_actor::claim_statement;
pub use worker::handlers::completion_processor::{
    recording_statement, CompletionProcessorService, CompletionSettings, RecordOutcome,
};
pub use worker::handlers::dispatch_service::{execute, metadata, HandlerDispatchService};
pub use worker::in_flight::InFlight;
