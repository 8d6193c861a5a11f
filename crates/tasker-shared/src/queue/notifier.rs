//! Wake-up notifications for queue consumers, sent after the sending transaction commits.
//!
//! A NOTIFY inside a writing transaction makes Postgres hold one database-wide lock from
//! pre-commit through the WAL flush, which serialises every such commit (measured here: a
//! third of the engine's sessions queued on it). So senders commit first and then ask the
//! notifier, which sends `pg_notify` from its own tiny read-only transactions, folding the
//! channels that pile up while one is in flight into a single statement.
//!
//! The same goes for tasks that may have finished: their waiters (see
//! [`crate::task_waiter`]) are told from here, for those that really are terminal.
//!
//! Consumers in the same process (a worker whose own completions, or whose embedded
//! orchestration, enqueue steps for its queues) are woken directly as well, without the
//! round trip through Postgres. The NOTIFY still goes out, for other processes; its payload
//! names the sending process, so that a consumer here can tell its echo from news.

use super::{notify_channel, QueueName};
use crate::database::HotConnection;
use crate::task_waiter::{TASK_FINISHED_CHANNEL, TERMINAL_TASK_STATES};
use parking_lot::Mutex;
use sqlx::PgPool;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock};
use tokio::sync::{mpsc, Notify};
use uuid::Uuid;

/// In-process consumers by database and notification channel, shared by every notifier of
/// the process (a worker and its embedded orchestration each have their own). One entry per
/// queue served; they live as long as the process.
type LocalWakes = Mutex<HashMap<(Arc<str>, String), Arc<Notify>>>;
static LOCAL: LazyLock<LocalWakes> = LazyLock::new(Default::default);

/// Pending wake-ups beyond this are dropped: one already queued for the channel suffices.
const BACKLOG: usize = 1024;

/// The payload of this process's queue notifications.
static SENDER: LazyLock<String> = LazyLock::new(|| Uuid::now_v7().to_string());

/// Whether a queue notification came from this process: its in-process consumers were
/// woken directly when it was sent, so for them it is only an echo.
pub fn sent_by_this_process(payload: &str) -> bool {
    payload == SENDER.as_str()
}

#[derive(Clone, Debug)]
pub struct Notifier {
    tx: mpsc::Sender<Wake>,
    /// The database whose queues this notifier wakes.
    database: Arc<str>,
}

enum Wake {
    Queue(String),
    /// Tasks a transaction may have moved to a terminal state.
    Tasks(Vec<Uuid>),
}

impl Notifier {
    /// Starts the sending task on the current tokio runtime; it ends when every clone of
    /// the notifier is dropped.
    pub fn spawn(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let database = pool.connect_options().get_database().unwrap_or("").into();
        tokio::spawn(run(pool, rx));
        Self { tx, database }
    }

    /// What an in-process consumer of `queue` waits on: `notify` wakes it at once (or its
    /// next wait, if it is busy reading).
    pub fn local_wake(&self, queue: &QueueName) -> Arc<Notify> {
        LOCAL
            .lock()
            .entry((self.database.clone(), notify_channel(queue)))
            .or_default()
            .clone()
    }

    /// Asks for consumers of `queue` to be woken. Never blocks.
    pub fn notify(&self, queue: &QueueName) {
        let channel = notify_channel(queue);
        if let Some(local) = LOCAL.lock().get(&(self.database.clone(), channel.clone())) {
            local.notify_one();
        }
        if self.tx.try_send(Wake::Queue(channel)).is_err() {
            metrics::counter!("tasker_queue_notifications_coalesced_total").increment(1);
        }
    }

    /// Wakes the waiters of those of `tasks` that are in a terminal state by the time the
    /// notification is sent. Never blocks; a dropped wake-up is covered by the waiters'
    /// fallback poll.
    pub fn task_finished(&self, tasks: Vec<Uuid>) {
        if tasks.is_empty() {
            return;
        }
        if self.tx.try_send(Wake::Tasks(tasks)).is_err() {
            metrics::counter!("tasker_task_notifications_dropped_total").increment(1);
        }
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Wake>) {
    // Statement after statement, one at a time: a connection of its own (see HotConnection).
    let hot = HotConnection::new(pool);
    while let Some(first) = rx.recv().await {
        let mut channels = BTreeSet::new();
        let mut tasks = BTreeSet::new();
        let mut add = |w: Wake| match w {
            Wake::Queue(c) => {
                channels.insert(c);
            }
            Wake::Tasks(t) => tasks.extend(t),
        };
        add(first);
        while let Ok(w) = rx.try_recv() {
            add(w);
        }
        if !tasks.is_empty() {
            let tasks: Vec<Uuid> = tasks.into_iter().collect();
            // A function, so that its statement is planned once per connection.
            let sent = async {
                let mut lease = hot.lease().await?;
                let sent = sqlx::query("SELECT tasker.notify_tasks_finished($1, $2, $3)")
                    .bind(TASK_FINISHED_CHANNEL)
                    .bind(&tasks)
                    .bind(&TERMINAL_TASK_STATES[..])
                    .execute(&mut *lease)
                    .await;
                lease.settle(sent)
            }
            .await;
            if let Err(e) = sent {
                // Waiters' fallback polls see the task finished; nothing is lost.
                tracing::debug!(error = %e, "task finished notification not sent");
            }
        }
        if channels.is_empty() {
            continue;
        }
        let channels: Vec<String> = channels.into_iter().collect();
        let sent = async {
            let mut lease = hot.lease().await?;
            let sent = sqlx::query("SELECT pg_notify(c, $2) FROM unnest($1::text[]) AS c")
                .bind(&channels)
                .bind(SENDER.as_str())
                .execute(&mut *lease)
                .await;
            lease.settle(sent)
        }
        .await;
        match sent {
            Ok(_) => metrics::counter!("tasker_queue_notifications_total")
                .increment(channels.len() as u64),
            // Consumers' fallback polls pick the work up; nothing is lost.
            Err(e) => tracing::debug!(error = %e, "queue notification not sent"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn notifier(database: &str) -> Notifier {
        // Never connects: the sending task's pg_notify fails quietly, which is all these
        // tests need from it.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .acquire_timeout(Duration::from_millis(50))
            .connect_lazy(&format!("postgresql://nobody@127.0.0.1:1/{database}"))
            .unwrap();
        Notifier::spawn(pool)
    }

    #[tokio::test]
    async fn wakes_in_process_consumers_of_that_queue_of_that_database_only() {
        let n = notifier("wake_one");
        let q = QueueName::new("worker_a_queue").unwrap();
        let other = QueueName::new("worker_b_queue").unwrap();
        // Another component of the process, with its own notifier.
        let wake = notifier("wake_one").local_wake(&q);
        let wake_other = n.local_wake(&other);
        let wake_elsewhere = notifier("wake_two").local_wake(&q);
        n.notify(&q);
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("woken");
        for (sleeper, why) in [
            (wake_other, "another queue's consumer sleeps on"),
            (wake_elsewhere, "another database's consumer sleeps on"),
        ] {
            assert!(
                tokio::time::timeout(Duration::from_millis(50), sleeper.notified())
                    .await
                    .is_err(),
                "{why}"
            );
        }
    }

    #[tokio::test]
    async fn a_wake_while_the_consumer_is_busy_is_kept_for_its_next_wait() {
        let n = notifier("wake_three");
        let q = QueueName::new("worker_a_queue").unwrap();
        let wake = n.local_wake(&q);
        n.notify(&q);
        n.notify(&q);
        tokio::time::timeout(Duration::from_secs(1), wake.notified())
            .await
            .expect("the stored wake-up");
        assert!(
            tokio::time::timeout(Duration::from_millis(50), wake.notified())
                .await
                .is_err(),
            "wake-ups fold into one"
        );
    }
}
