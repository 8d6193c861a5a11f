//! ActorCommandProcessor: the single consumer of the bounded command channel; routes each
//! command to the actor that owns it.

use super::actors::step_executor_actor::StepExecutorActor;
use super::commands::{WorkerCommand, WorkerStatus};
use super::in_flight::InFlight;
use std::sync::Arc;
use tokio::sync::{mpsc, Semaphore};

pub struct ActorCommandProcessor {
    pub executor: StepExecutorActor,
    pub in_flight: Arc<InFlight>,
    pub semaphore: Arc<Semaphore>,
    pub completion_depth: Arc<dyn Fn() -> (usize, usize) + Send + Sync>,
    pub worker_id: String,
    pub namespaces: Vec<String>,
    /// How long a message read stays hidden (`[queues] visibility_timeout_seconds`).
    pub visibility_timeout_seconds: i32,
}

impl ActorCommandProcessor {
    /// Runs until the command channel closes (all senders dropped at shutdown).
    pub async fn run(self, mut commands: mpsc::Receiver<WorkerCommand>) {
        while let Some(cmd) = commands.recv().await {
            match cmd {
                WorkerCommand::ExecuteSteps { queue, max, reply } => {
                    let read = self
                        .executor
                        .claim_from_queue(&queue, max as i32, self.visibility_timeout_seconds)
                        .await;
                    // The reservation was made for `max`; claimed steps are entries now.
                    self.in_flight.unreserve(max);
                    let _ = reply.send(read);
                }
                WorkerCommand::GetStatus { reply } => {
                    let _ = reply.send(self.status());
                }
                WorkerCommand::HealthCheck { reply } => {
                    let _ = reply.send(!self.executor.dispatch_sender().is_closed());
                }
            }
        }
    }

    fn status(&self) -> WorkerStatus {
        let dispatch = self.executor.dispatch_sender();
        let (completion_depth, completion_capacity) = (self.completion_depth)();
        WorkerStatus {
            worker_id: self.worker_id.clone(),
            namespaces: self.namespaces.clone(),
            in_flight: self.in_flight.len(),
            dispatch_channel_depth: dispatch.max_capacity() - dispatch.capacity(),
            dispatch_channel_capacity: dispatch.max_capacity(),
            completion_channel_depth: completion_depth,
            completion_channel_capacity: completion_capacity,
            handler_permits_available: self.semaphore.available_permits(),
            steps_claimed: self.in_flight.claimed_total(),
        }
    }
}
