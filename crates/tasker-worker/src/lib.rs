//! The Tasker worker core: the dual-channel, fire-and-forget step execution pipeline.
//!
//! ```text
//! WorkerEventSystem -> ActorCommandProcessor -> StepExecutorActor (read + claim)
//!     -> HANDLER DISPATCH CHANNEL -> HandlerDispatchService (Rust) | FfiDispatchChannel (Ruby)
//!     -> COMPLETION CHANNEL -> CompletionProcessorService (record) -> PostHandlerCallback
//! ```

pub mod step;
pub mod worker;

pub use step::{batch_ranges, DispatchedStep, HandlerError, HandlerOutput, StepContext};
pub use worker::core::{Dispatch, WorkerCore, WorkerHandle, WorkerOptions};
pub use worker::handlers::registry::{HandlerRegistry, StepHandler};
