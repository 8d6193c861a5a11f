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
//! - `ffi`: the façade a language binding (Ruby, Python) uses, and the only one it uses.
//! - `step`: what a handler gets and returns (`StepContext`, `HandlerOutput`, `HandlerError`).
//! - `worker::core`: `WorkerCore::start` wires everything below; `WorkerHandle` stops it.
//! - `worker::event_system`, `worker::actor_command_processor`, `worker::actors`: waking,
//!   commands, reading and claiming.
//! - `worker::handlers`: dispatch to Rust handlers (`dispatch_service`, `registry`), to foreign
//!   ones (`ffi_dispatch_channel`), and recording (`completion_processor`).
//! - `worker::registration`, `worker::heartbeat`, `worker::in_flight`, `worker::creation_claims`:
//!   liveness, leases, what the worker holds, roots claimed at creation.
//! - `worker::domain_event_callback`, `worker::http`, `worker::worker_metrics`: events, the
//!   worker's `/health` and `/metrics`, metric names.

pub mod ffi;
pub mod step;
pub mod worker;

pub use step::{batch_ranges, DispatchedStep, HandlerError, HandlerOutput, StepContext};
pub use worker::core::{Dispatch, WorkerCore, WorkerHandle, WorkerOptions};
pub use worker::handlers::registry::{HandlerRegistry, StepHandler};
