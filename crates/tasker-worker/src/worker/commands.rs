//! Commands the event system and the worker handle send to the ActorCommandProcessor.

use serde::Serialize;
use tasker_shared::queue::QueueName;
use tokio::sync::oneshot;

#[derive(Debug)]
pub enum WorkerCommand {
    /// Read up to `max` messages of a worker queue, claim the steps they name and dispatch
    /// them; replies with how many messages were read.
    ExecuteSteps {
        queue: QueueName,
        max: usize,
        reply: oneshot::Sender<Result<usize, sqlx::Error>>,
    },
    GetStatus {
        reply: oneshot::Sender<WorkerStatus>,
    },
    HealthCheck {
        reply: oneshot::Sender<bool>,
    },
}

/// A snapshot of what the worker is doing.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub worker_id: String,
    pub namespaces: Vec<String>,
    pub in_flight: usize,
    pub dispatch_channel_depth: usize,
    pub dispatch_channel_capacity: usize,
    pub completion_channel_depth: usize,
    pub completion_channel_capacity: usize,
    pub handler_permits_available: usize,
    pub steps_claimed: u64,
}
