//! Steps this worker has claimed and not yet recorded: what the heartbeat renews and what a
//! graceful shutdown hands back.

use parking_lot::Mutex;
use std::collections::HashMap;
use tasker_shared::queue::QueueName;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct InFlightStep {
    pub queue: QueueName,
    pub msg_id: i64,
    pub attempt: i32,
}

#[derive(Debug, Default)]
pub struct InFlight {
    steps: Mutex<HashMap<Uuid, InFlightStep>>,
    /// Messages read and not yet through the claim: they count against the limit too.
    reserved: std::sync::atomic::AtomicUsize,
    released: tokio::sync::Notify,
}

impl InFlight {
    pub fn insert(&self, step: Uuid, entry: InFlightStep) {
        self.steps.lock().insert(step, entry);
        metrics::gauge!("tasker_worker_steps_in_flight").increment(1.0);
    }

    pub fn remove(&self, step: &Uuid) -> Option<InFlightStep> {
        let removed = self.steps.lock().remove(step);
        if removed.is_some() {
            metrics::gauge!("tasker_worker_steps_in_flight").decrement(1.0);
            // Wake every waiting reader, and leave a permit for one that is about to wait.
            self.released.notify_waiters();
            self.released.notify_one();
        }
        removed
    }

    /// Steps held plus messages read and awaiting their claim.
    pub fn held(&self) -> usize {
        self.len() + self.reserved.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn reserve(&self, n: usize) {
        self.reserved
            .fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// Ends a reservation once its messages went through the claim (claimed ones are now
    /// entries of their own).
    pub fn unreserve(&self, n: usize) {
        self.reserved
            .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
        self.released.notify_waiters();
        self.released.notify_one();
    }

    /// Waits until a step is released, or `timeout`.
    pub async fn released(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.released.notified()).await;
    }

    pub fn len(&self) -> usize {
        self.steps.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<(Uuid, InFlightStep)> {
        self.steps
            .lock()
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}
