//! Steps this worker has claimed and not yet recorded: what the heartbeat renews and what a
//! graceful shutdown hands back. Those whose handler has not finished yet are what
//! `max_steps_in_flight` limits: they are work other workers cannot take. A finished step
//! waiting for its result to be recorded hides nothing from them.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use tasker_shared::queue::QueueName;
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct InFlightStep {
    pub queue: QueueName,
    pub attempt: i32,
    /// Its handler has finished; only recording the result remains.
    pub executed: bool,
}

#[derive(Debug, Default)]
pub struct InFlight {
    steps: Mutex<HashMap<Uuid, InFlightStep>>,
    /// Entries marked executed.
    executed: AtomicUsize,
    /// Messages read and not yet through the claim: they count against the limit too.
    reserved: AtomicUsize,
    /// Steps ever entered: every claim this worker made.
    claimed: AtomicU64,
    released: tokio::sync::Notify,
}

impl InFlight {
    pub fn insert(&self, step: Uuid, entry: InFlightStep) {
        let executed = entry.executed;
        if let Some(old) = self.steps.lock().insert(step, entry) {
            if old.executed {
                self.executed.fetch_sub(1, Ordering::AcqRel);
            }
        } else {
            metrics::gauge!("tasker_worker_steps_in_flight").increment(1.0);
            self.claimed.fetch_add(1, Ordering::Relaxed);
        }
        if executed {
            self.executed.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// The step's handler has finished: it no longer counts against `max_steps_in_flight`.
    pub fn mark_executed(&self, step: &Uuid) {
        let newly = match self.steps.lock().get_mut(step) {
            Some(e) if !e.executed => {
                e.executed = true;
                true
            }
            _ => false,
        };
        if newly {
            self.executed.fetch_add(1, Ordering::AcqRel);
            self.wake_readers();
        }
    }

    pub fn remove(&self, step: &Uuid) -> Option<InFlightStep> {
        let removed = self.steps.lock().remove(step);
        if let Some(e) = &removed {
            metrics::gauge!("tasker_worker_steps_in_flight").decrement(1.0);
            if e.executed {
                self.executed.fetch_sub(1, Ordering::AcqRel);
            }
            self.wake_readers();
        }
        removed
    }

    /// Steps whose handler has not finished (waiting for one or running) plus messages read
    /// and awaiting their claim: what `max_steps_in_flight` limits.
    pub fn unexecuted(&self) -> usize {
        self.unexecuted_steps() + self.reserved.load(Ordering::Acquire)
    }

    /// Claimed steps whose handler has not finished (waiting for one or running).
    pub fn unexecuted_steps(&self) -> usize {
        self.len()
            .saturating_sub(self.executed.load(Ordering::Acquire))
    }

    pub fn reserve(&self, n: usize) {
        self.reserved.fetch_add(n, Ordering::AcqRel);
    }

    /// Ends a reservation once its messages went through the claim (claimed ones are now
    /// entries of their own).
    pub fn unreserve(&self, n: usize) {
        self.reserved.fetch_sub(n, Ordering::AcqRel);
        self.wake_readers();
    }

    /// Wakes every waiting reader, and leaves a permit for one that is about to wait.
    fn wake_readers(&self) {
        self.released.notify_waiters();
        self.released.notify_one();
    }

    /// Waits until room is made (a step executed or released, a claim done), or `timeout`.
    pub async fn released(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.released.notified()).await;
    }

    /// Steps claimed since the worker started, whether read from a queue or taken by a
    /// recording that readied them.
    pub fn claimed_total(&self) -> u64 {
        self.claimed.load(Ordering::Relaxed)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> InFlightStep {
        InFlightStep {
            queue: tasker_shared::queue::worker_queue("ns").unwrap(),
            attempt: 1,
            executed: false,
        }
    }

    #[test]
    fn executed_steps_stop_counting_against_the_limit_but_stay_held() {
        let f = InFlight::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        f.insert(a, entry());
        f.insert(b, entry());
        f.reserve(3);
        assert_eq!(f.unexecuted(), 5);
        f.mark_executed(&a);
        f.mark_executed(&a);
        assert_eq!((f.unexecuted(), f.len()), (4, 2));
        f.unreserve(3);
        f.remove(&a);
        assert_eq!((f.unexecuted(), f.len()), (1, 1));
        f.mark_executed(&Uuid::now_v7());
        f.remove(&b);
        assert_eq!((f.unexecuted(), f.len()), (0, 0));
    }
}
