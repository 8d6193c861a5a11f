//! Domain events a step's template declares. `durable` ones are written to the
//! `<namespace>_domain_events` queue by the recording of the step's result, in its
//! transaction ([`durable_events`]); `fast` ones are broadcast in-process by
//! [`DomainEventCallback`] once the result is recorded. Neither can fail the step.

use crate::step::DispatchedStep;
use crate::worker::handlers::dispatch_service::PostHandlerCallback;
use crate::worker::worker_metrics as m;
use chrono::Utc;
use tasker_shared::messages::DomainEvent;
use tasker_shared::template::DeliveryMode;
use tasker_shared::StepExecutionResult;
use tokio::sync::broadcast;
use uuid::Uuid;

#[derive(Clone)]
pub struct DomainEventCallback {
    fast: broadcast::Sender<DomainEvent>,
}

impl DomainEventCallback {
    pub fn new(capacity: usize) -> Self {
        let (fast, _) = broadcast::channel(capacity.max(1));
        Self { fast }
    }

    /// A receiver of `fast` events. A receiver that falls behind loses the oldest events
    /// (counted as dropped) rather than slowing the worker.
    pub fn subscribe(&self) -> broadcast::Receiver<DomainEvent> {
        self.fast.subscribe()
    }
}

/// The events of `mode` a step's result publishes, as its template declares them.
fn events<'a>(
    step: &'a DispatchedStep,
    result: &'a StepExecutionResult,
    mode: DeliveryMode,
) -> impl Iterator<Item = DomainEvent> + 'a {
    let ctx = &step.context;
    step.publishes_events
        .iter()
        .filter(move |d| d.delivery_mode == mode && d.condition.matches(result.success))
        .map(move |decl| DomainEvent {
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
        })
}

/// The durable events a result publishes. The recording writes them to the namespace's
/// `<namespace>_domain_events` queue in its own transaction (SQL `complete_steps`): they
/// commit with the result or not at all, so a crash after the commit loses none, and a
/// refused result sends none.
pub fn durable_events(step: &DispatchedStep, result: &StepExecutionResult) -> Vec<DomainEvent> {
    events(step, result, DeliveryMode::Durable).collect()
}

#[async_trait::async_trait]
impl PostHandlerCallback for DomainEventCallback {
    /// Broadcasts the `fast` events of a recorded result; its durable ones were written by
    /// the recording and are only counted here.
    async fn on_handler_complete(&self, step: &DispatchedStep, result: &StepExecutionResult) {
        for event in events(step, result, DeliveryMode::Fast) {
            // No subscriber is not an error: nobody asked to hear it.
            let _ = self.fast.send(event);
            metrics::counter!(m::EVENTS_PUBLISHED, "delivery" => "fast").increment(1);
        }
        let durable = step
            .publishes_events
            .iter()
            .filter(|d| {
                d.delivery_mode == DeliveryMode::Durable && d.condition.matches(result.success)
            })
            .count();
        if durable > 0 {
            metrics::counter!(m::EVENTS_PUBLISHED, "delivery" => "durable")
                .increment(durable as u64);
        }
    }

    fn name(&self) -> &str {
        "domain_events"
    }
}
