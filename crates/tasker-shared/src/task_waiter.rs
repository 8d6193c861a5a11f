//! Waiting for tasks to finish, woken by the database rather than by polling.
//!
//! Whoever moves a task to a terminal state asks for a notification on
//! [`TASK_FINISHED_CHANNEL`] with the task id as payload (after commit, see
//! [`crate::queue::Notifier::task_finished`]). One [`TaskWaiter`] per process holds one
//! listening connection, shared by every waiter in it; a slow poll over all waited-for tasks
//! covers notifications lost while that connection was down.

use crate::state::TaskState;
use parking_lot::Mutex;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashMap;
use std::future::Future;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

/// The channel a task's id is sent on when it reaches a terminal state.
pub const TASK_FINISHED_CHANNEL: &str = "tasker_task_finished";

/// Terminal task states, as stored.
pub const TERMINAL_TASK_STATES: [&str; 4] = ["complete", "error", "cancelled", "resolved_manually"];

/// Longer waits are cut to this (a deadline must stay representable).
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// Waits for tasks to reach a terminal state. Cheap to clone; clones share the listener.
#[derive(Clone)]
pub struct TaskWaiter {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    fallback_poll: Duration,
    reconnect_backoff: Duration,
    watched: Mutex<HashMap<Uuid, Watch>>,
    listening: Mutex<bool>,
}

struct Watch {
    wake: Arc<Notify>,
    waiters: usize,
}

/// Unregisters a waiter however its wait ends.
struct WatchGuard<'a> {
    inner: &'a Inner,
    task: Uuid,
    wake: Arc<Notify>,
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        let mut watched = self.inner.watched.lock();
        if let Some(w) = watched.get_mut(&self.task) {
            w.waiters -= 1;
            if w.waiters == 0 {
                watched.remove(&self.task);
            }
        }
    }
}

impl TaskWaiter {
    /// `fallback_poll`: how often waited-for tasks are read when no notification came;
    /// `reconnect_backoff`: the pause before reconnecting a lost listening connection.
    pub fn new(pool: PgPool, fallback_poll: Duration, reconnect_backoff: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                fallback_poll,
                reconnect_backoff,
                watched: Mutex::new(HashMap::new()),
                listening: Mutex::new(false),
            }),
        }
    }

    /// How many distinct tasks are being waited for now.
    pub fn watched(&self) -> usize {
        self.inner.watched.lock().len()
    }

    /// Waits until the task is in a terminal state or `timeout` (at most [`MAX_WAIT`])
    /// passes, and returns its state then; `None` if there is no such task.
    pub async fn wait(
        &self,
        task: Uuid,
        timeout: Duration,
    ) -> Result<Option<TaskState>, sqlx::Error> {
        self.wait_with(task, timeout, || async {
            let state = self.state_of(task).await?;
            Ok((state, state))
        })
        .await
    }

    /// Waits as [`wait`](Self::wait) does, reading the task with `read`, which returns what
    /// the caller wants of it and its state (`None`: no such task). Returns what the read
    /// that found the task terminal or missing returned, or the last read's at the
    /// deadline: a caller that wants the task itself gets it from the read that saw it
    /// finish, without another round trip.
    pub async fn wait_with<T, E, F, Fut>(
        &self,
        task: Uuid,
        timeout: Duration,
        mut read: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(T, Option<TaskState>), E>>,
    {
        let deadline = Instant::now() + timeout.min(MAX_WAIT);
        self.ensure_listening();
        let guard = self.watch(task);
        loop {
            // Armed before the read, so a notification sent between the read and the wait
            // is not missed.
            let woken = guard.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (value, state) = read().await?;
            match state {
                Some(s) if !s.is_terminal() && Instant::now() < deadline => {}
                _ => return Ok(value),
            }
            tokio::select! {
                _ = woken => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn state_of(&self, task: Uuid) -> Result<Option<TaskState>, sqlx::Error> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM tasker.tasks WHERE task_uuid = $1")
                .bind(task)
                .fetch_optional(&self.inner.pool)
                .await?;
        Ok(state.and_then(|s| TaskState::from_str(&s).ok()))
    }

    fn watch(&self, task: Uuid) -> WatchGuard<'_> {
        let mut watched = self.inner.watched.lock();
        let w = watched.entry(task).or_insert_with(|| Watch {
            wake: Arc::new(Notify::new()),
            waiters: 0,
        });
        w.waiters += 1;
        WatchGuard {
            inner: &self.inner,
            task,
            wake: w.wake.clone(),
        }
    }

    /// Starts the listening task on first use (it needs a runtime, which `new` may lack).
    fn ensure_listening(&self) {
        let mut listening = self.inner.listening.lock();
        if !*listening {
            *listening = true;
            tokio::spawn(listen(Arc::downgrade(&self.inner)));
        }
    }
}

impl Inner {
    fn wake(&self, task: &Uuid) {
        if let Some(w) = self.watched.lock().get(task) {
            w.wake.notify_waiters();
        }
    }

    fn wake_all(&self) {
        for w in self.watched.lock().values() {
            w.wake.notify_waiters();
        }
    }

    /// Wakes the waiters of every watched task that is already terminal.
    async fn poll_watched(&self) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = self.watched.lock().keys().copied().collect();
        if ids.is_empty() {
            return Ok(());
        }
        let finished: Vec<Uuid> = sqlx::query_scalar(
            "SELECT task_uuid FROM tasker.tasks WHERE task_uuid = ANY ($1) AND state = ANY ($2)",
        )
        .bind(&ids)
        .bind(&TERMINAL_TASK_STATES[..])
        .fetch_all(&self.pool)
        .await?;
        for id in &finished {
            self.wake(id);
        }
        Ok(())
    }
}

/// The one listening connection of a process, and the fallback poll on its own clock (a
/// busy channel must not postpone it). Ends when the last waiter handle is dropped (checked
/// at least every fallback interval).
async fn listen(inner: Weak<Inner>) {
    let Some(me) = inner.upgrade() else { return };
    let mut poll = tokio::time::interval(me.fallback_poll);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let backoff = me.reconnect_backoff;
    drop(me);
    let mut listener: Option<PgListener> = None;
    loop {
        let Some(me) = inner.upgrade() else { return };
        if listener.is_none() {
            listener = match connect(&me.pool).await {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::debug!(error = %e, "task waiter cannot listen; polling until it can");
                    None
                }
            };
            // Notifications sent while nobody listened are lost: look now.
            if let Err(e) = me.poll_watched().await {
                tracing::debug!(error = %e, "task waiter poll failed");
            }
        }
        drop(me);
        let received = match listener.as_mut() {
            Some(l) => tokio::select! {
                r = l.try_recv() => Some(r),
                _ = poll.tick() => None,
            },
            None => {
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let Some(me) = inner.upgrade() else { return };
        match received {
            Some(Ok(Some(n))) => {
                if let Ok(id) = Uuid::parse_str(n.payload()) {
                    me.wake(&id);
                }
            }
            // The connection was lost: reconnect, and let every waiter read its task again.
            Some(Ok(None)) | Some(Err(_)) => {
                listener = None;
                me.wake_all();
            }
            None => {
                if let Err(e) = me.poll_watched().await {
                    tracing::debug!(error = %e, "task waiter poll failed");
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect_with(pool).await?;
    l.listen(TASK_FINISHED_CHANNEL).await?;
    Ok(l)
}
