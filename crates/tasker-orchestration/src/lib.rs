//! Orchestration: turns task requests into enqueued steps, step results into state, and
//! decides when a task is done. Runs as `tasker server`, or embedded in a worker process.
//!
//! # Layout
//!
//! - `task_initializer` (with `task_request`, `fixed_steps`, `creation_batcher`): creating tasks.
//! - `orchestrator`: `OrchestrationCore` and the loops it starts: `step_enqueuer`,
//!   `result_processor`, `dead_worker_reaper`, `queue_maintenance`, `retention`,
//!   `state_gauges`, all on `periodic`'s timer.
//! - `task_operations`: what an operator does to a task (cancel, reset or resolve a step).
//! - `api`: the REST API (`/v1`), `/health`, `/metrics`; `dashboard`: the HTML pages at `/ui`.

pub mod api;
pub mod client;
pub mod creation_batcher;
pub mod dashboard;
pub mod dead_worker_reaper;
mod error;
mod fixed_steps;
pub mod orchestrator;
mod periodic;
pub mod queue_maintenance;
pub mod result_processor;
pub mod retention;
pub mod state_gauges;
pub mod step_enqueuer;
pub mod task_initializer;
pub mod task_operations;
mod task_request;

pub use error::OrchestrationError;
pub use orchestrator::{OrchestrationCore, OrchestrationHandle};
pub use task_initializer::TaskInitializer;
pub use task_request::{CreatedTask, TaskRequest, TASKS_CREATED};
