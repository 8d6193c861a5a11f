//! The steps an FfiDispatchChannel holds for its foreign handler threads: a bounded FIFO whose
//! pollers park on a condition variable until a step arrives, the queue is closed or sealed
//! and empty, or their deadline passes.
//!
//! Not a crossbeam channel: its blocking receive spins and then yields the CPU several times
//! before it parks. With ten handler threads on two cores, those yields and the context
//! switches they forced took more of the Ruby process's CPU than the handlers did (perf, one
//! Ruby process with embedded orchestration), CPU the database needed.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::time::Instant;

pub(super) struct ReadyQueue<T> {
    state: Mutex<State<T>>,
    arrived: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Nothing more is handed out, even what is buffered.
    closed: bool,
    /// Nothing more arrives; what is buffered is still handed out.
    sealed: bool,
}

/// Why a push was refused; the item comes back when it may be tried again.
pub(super) enum Refused<T> {
    Full(T),
    Closed,
}

/// Why a wait ended without an item.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Empty {
    TimedOut,
    /// Closed, or sealed with nothing left: waiting longer cannot help.
    Ended,
}

impl<T> ReadyQueue<T> {
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity),
                closed: false,
                sealed: false,
            }),
            arrived: Condvar::new(),
            capacity,
        }
    }

    pub fn try_push(&self, item: T) -> Result<(), Refused<T>> {
        let mut state = self.state.lock();
        if state.closed || state.sealed {
            return Err(Refused::Closed);
        }
        if state.items.len() >= self.capacity {
            return Err(Refused::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.arrived.notify_one();
        Ok(())
    }

    /// The oldest item, if any; None once closed, whatever is still buffered.
    pub fn try_pop(&self) -> Option<T> {
        let mut state = self.state.lock();
        if state.closed {
            return None;
        }
        state.items.pop_front()
    }

    /// Waits for the oldest item until `deadline`.
    pub fn pop_until(&self, deadline: Instant) -> Result<T, Empty> {
        let mut state = self.state.lock();
        loop {
            if state.closed {
                return Err(Empty::Ended);
            }
            if let Some(item) = state.items.pop_front() {
                return Ok(item);
            }
            if state.sealed {
                return Err(Empty::Ended);
            }
            // A poll that may not wait (the extension's first, GVL-holding attempt) should
            // not go through the parking machinery to find that out.
            if Instant::now() >= deadline {
                return Err(Empty::TimedOut);
            }
            if self.arrived.wait_until(&mut state, deadline).timed_out() {
                return match state.items.pop_front() {
                    Some(item) if !state.closed => Ok(item),
                    _ if state.closed || state.sealed => Err(Empty::Ended),
                    _ => Err(Empty::TimedOut),
                };
            }
        }
    }

    pub fn len(&self) -> usize {
        self.state.lock().items.len()
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Refuses pushes from now on; pollers take what is buffered, then stop waiting.
    pub fn seal(&self) {
        self.state.lock().sealed = true;
        self.arrived.notify_all();
    }

    /// Refuses pushes and pops from now on and wakes every waiting poller.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.arrived.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    /// A thread waiting up to 30 s for an item: what it got and how long it waited.
    fn spawn_poller<T: Send + 'static>(
        q: Arc<ReadyQueue<T>>,
    ) -> JoinHandle<(Result<T, Empty>, Duration)> {
        std::thread::spawn(move || {
            let started = Instant::now();
            (
                q.pop_until(started + Duration::from_secs(30)),
                started.elapsed(),
            )
        })
    }

    #[test]
    fn first_in_first_out_up_to_capacity() {
        let q = ReadyQueue::new(2);
        assert!(q.try_push(1).is_ok());
        assert!(q.try_push(2).is_ok());
        assert!(matches!(q.try_push(3), Err(Refused::Full(3))));
        assert_eq!(q.len(), 2);
        assert_eq!(q.try_pop(), Some(1));
        assert_eq!(q.pop_until(Instant::now()), Ok(2));
        assert_eq!(q.pop_until(Instant::now()), Err(Empty::TimedOut));
        assert_eq!(q.try_pop(), None);
    }

    #[test]
    fn a_waiting_poller_wakes_for_a_push() {
        let q = Arc::new(ReadyQueue::new(4));
        let waiter = spawn_poller(q.clone());
        std::thread::sleep(Duration::from_millis(50));
        assert!(q.try_push("step").is_ok());
        let (got, waited) = waiter.join().unwrap();
        assert_eq!(got, Ok("step"));
        assert!(
            waited < Duration::from_secs(10),
            "woken by its deadline, not the push"
        );
    }

    #[test]
    fn a_poller_returns_at_its_deadline() {
        let q = ReadyQueue::<u8>::new(1);
        let started = Instant::now();
        assert_eq!(
            q.pop_until(started + Duration::from_millis(30)),
            Err(Empty::TimedOut)
        );
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn a_sealed_queue_hands_out_what_it_holds_then_stops_waiting() {
        let q = Arc::new(ReadyQueue::new(4));
        assert!(q.try_push(1).is_ok());
        q.seal();
        assert!(matches!(q.try_push(2), Err(Refused::Closed)));
        assert_eq!(q.try_pop(), Some(1));
        let waiter = spawn_poller(q.clone());
        let (got, waited) = waiter.join().unwrap();
        assert_eq!(got, Err(Empty::Ended));
        assert!(
            waited < Duration::from_secs(10),
            "waited on a sealed, empty queue"
        );
        assert!(!q.is_closed());
    }

    #[test]
    fn closing_wakes_pollers_and_hides_what_is_buffered() {
        let q = Arc::new(ReadyQueue::new(4));
        let waiter = spawn_poller(q.clone());
        std::thread::sleep(Duration::from_millis(50));
        q.close();
        let (got, waited) = waiter.join().unwrap();
        assert_eq!(got, Err::<u8, _>(Empty::Ended));
        assert!(
            waited < Duration::from_secs(10),
            "woken by its deadline, not the close"
        );
        assert!(matches!(q.try_push(1), Err(Refused::Closed)));
        assert!(q.is_closed());
        assert_eq!(q.try_pop(), None);
    }
}
