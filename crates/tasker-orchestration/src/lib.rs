//! Orchestration: turns task requests into enqueued steps, step results into state, and
//! decides when a task is done. Runs as `tasker server`, or embedded in a worker process.
//!
//! # Layout
//!
//! Public modules: `api`, `client`, `retention`, `task_operations`, whose names say what
//! their functions act on (`retention::run_once`, `task_operations::cancel_task`). The rest
//! is private, with what other crates use re-exported at the root.
//!
//! - `task_initializer` (with `task_request`, `task_spec`, `creation_batcher`): creating tasks.
//! - `orchestrator`: `OrchestrationCore` and the loops it starts: `step_enqueuer`,
//!   `result_processor`, `dead_worker_reaper`, `queue_maintenance`, `retention`,
//!   `state_gauges`, all on `periodic`'s timer.
//! - `task_operations`: what an operator does to a task (cancel, reset or resolve a step).
//! - `client`: the client calls a language binding offers (create, read, wait, cancel).
//! - `api`: the REST API (`/v1`), `/health`, `/metrics`; `dashboard`: the HTML pages at `/ui`.

pub mod api;
pub mod client;
mod creation_batcher;
mod dashboard;
mod dead_worker_reaper;
mod error;
mod orchestrator;
mod periodic;
mod queue_maintenance;
mod result_processor;
pub mod retention;
mod state_gauges;
mod step_enqueuer;
mod task_initializer;
pub mod task_operations;
mod task_request;
mod task_spec;

pub use dashboard::COUNT_CAP;
pub use error::OrchestrationError;
pub use orchestrator::{OrchestrationCore, OrchestrationHandle};
pub use state_gauges::{refresh as refresh_state_gauges, StateFigures};
pub use step_enqueuer::StepEnqueuer;
pub use task_initializer::TaskInitializer;
pub use task_request::{CreatedTask, TaskRequest, TASKS_CREATED};
