//! DomainEventCallback: publishes the domain events a step's template declares, once its
//! result is recorded. `durable` events go to the `<namespace>_domain_events` queue; `fast`
//! ones to an in-process broadcast. A failing publisher is logged and counted, never fails
//! the step.

use crate::step::DispatchedStep;
use crate::worker::handlers::dispatch_service::PostHandlerCallback;
use crate::worker::worker_metrics as m;
use chrono::Utc;
use tasker_shared::messages::DomainEvent;
use tasker_shared::queue::{domain_events_queue, QueueClient};
use tasker_shared::template::DeliveryMode;
use tasker_shared::StepExecutionResult;
use tokio::sync::broadcast;
use uuid::Uuid;

#[derive(Clone)]
pub struct DomainEventCallback {
    queues: QueueClient,
    fast: broadcast::Sender<DomainEvent>,
}

impl DomainEventCallback {
    pub fn new(queues: QueueClient, capacity: usize) -> Self {
        let (fast, _) = broadcast::channel(capacity.max(1));
        Self { queues, fast }
    }

    /// A receiver of `fast` events. A receiver that falls behind loses the oldest events
    /// (counted as dropped) rather than slowing the worker.
    pub fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.fast.subscribe()
    }

    pub fn sender(&self) -> broadcast::Sender<DomainEvent> {
        self.fast.clone()
    }
}

#[async_trait::async_trait]
impl PostHandlerCallback for DomainEventCallback {
    async fn on_handler_complete(&self, step: &DispatchedStep, result: &StepExecutionResult) {
        let ctx = &step.context;
        for decl in step
            .publishes_events
            .iter()
            .filter(|d| d.condition.matches(result.success))
        {
            let event = DomainEvent {
                event_uuid: Uuid::now_v7(),
                name: decl.name.clone(),
                namespace: ctx.namespace.clone(),
                task_uuid: ctx.task_uuid,
                step_uuid: ctx.step_uuid,
                step_name: ctx.step_name.clone(),
                success: result.success,
                payload: if result.success {
                    result.result.clone()
                } else {
                    serde_json::to_value(&result.error).unwrap_or_default()
                },
                published_at: Utc::now(),
            };
            let published = match decl.delivery_mode {
                DeliveryMode::Fast => {
                    // No subscriber is not an error: nobody asked to hear it.
                    let _ = self.fast.send(event);
                    true
                }
                DeliveryMode::Durable => match domain_events_queue(&ctx.namespace) {
                    Ok(q) => match self.queues.send(&q, &event, self.queues.pool()).await {
                        Ok(_) => true,
                        Err(e) => {
                            tracing::warn!(event = %decl.name, error = %e, "durable domain event not published");
                            false
                        }
                    },
                    Err(e) => {
                        tracing::warn!(event = %decl.name, error = %e, "no domain event queue for namespace");
                        false
                    }
                },
            };
            let counter = if published {
                m::EVENTS_PUBLISHED
            } else {
                m::EVENTS_DROPPED
            };
            metrics::counter!(counter, "delivery" => if decl.delivery_mode == DeliveryMode::Fast { "fast" } else { "durable" }).increment(1);
        }
    }

    fn name(&self) -> &str {
        "domain_events"
    }
}
