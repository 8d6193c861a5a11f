//! Tasker's domain model, shared by orchestration, the worker core and the Ruby extension.
//!
//! Nothing here knows about Ruby or about any one process: it is the vocabulary (templates,
//! states, messages, results), the configuration, and the database and queue access every
//! Tasker process needs.
//!
//! # Layout
//!
//! - `config`: the layered configuration (`TaskerConfig`, one struct per section, `[retention]`
//!   periods) and its loader.
//! - `database`: connecting, migrating (`migrations/`, embedded) and adopting databases built
//!   by the squashed migrations; `testing`: a database per test.
//! - `template`: task templates (model, YAML loader, validation).
//! - `state`: task and step states and their allowed transitions.
//! - `models`: rows read and written outside the hot path (tasks, steps, templates, workers,
//!   dead letters, removed tasks).
//! - `queue`: PGMQ queues, their names, the after-commit `Notifier`, queue maintenance.
//! - `messages`, `result`, `payload`: what travels between processes (step messages, domain
//!   events, step results) and the limits a stored payload must keep.
//! - `outcome`: what recording a result did with its step (`RecordingOutcome`).
//! - `claim`: a step's claim (`StepClaim`, `ClaimedStep`), as SQL's `tasker.step_claim` holds it.
//! - `local_worker`, `task_waiter`, `host`, `observability`: claiming at creation for an
//!   in-process worker, waiting for tasks, the host name, metrics and logs.
//! - `ErrorKind` (`error_kind`): what kind of failure each error is, for the language
//!   bindings' exception classes.

pub mod claim;
pub mod config;
pub mod database;
mod error_kind;
pub mod host;
pub mod local_worker;
pub mod messages;
pub mod models;
pub mod observability;
pub mod outcome;
pub mod payload;
pub mod queue;
pub mod result;
pub mod state;
pub mod task_waiter;
pub mod template;
pub mod testing;

pub use claim::{ClaimedStep, StepClaim};
pub use config::TaskerConfig;
pub use error_kind::{Classify, ErrorKind};
pub use outcome::RecordingOutcome;
pub use result::{ErrorType, StepError, StepExecutionResult};
pub use state::{StepState, TaskState};
pub use task_waiter::TaskWaiter;
pub use template::TaskTemplate;
