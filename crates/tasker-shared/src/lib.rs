//! Tasker's domain model, shared by orchestration, the worker core and the Ruby extension.
//!
//! Nothing here knows about Ruby or about any one process: it is the vocabulary (templates,
//! states, messages, results), the configuration, and the database and queue access every
//! Tasker process needs.

pub mod config;
pub mod database;
pub mod host;
pub mod local_worker;
pub mod messages;
pub mod models;
pub mod observability;
pub mod payload;
pub mod queue;
pub mod result;
pub mod state;
pub mod task_waiter;
pub mod template;
pub mod testing;

pub use config::TaskerConfig;
pub use result::{ErrorType, StepError, StepExecutionResult};
pub use state::{StepState, TaskState};
pub use task_waiter::TaskWaiter;
pub use template::TaskTemplate;
