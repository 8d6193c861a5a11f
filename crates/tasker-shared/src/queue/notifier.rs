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

use super::{notify_channel, QueueName};
use crate::task_waiter::{TASK_FINISHED_CHANNEL, TERMINAL_TASK_STATES};
use sqlx::PgPool;
use std::collections::BTreeSet;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Pending wake-ups beyond this are dropped: one already queued for the channel suffices.
const BACKLOG: usize = 1024;

#[derive(Clone, Debug)]
pub struct Notifier {
    tx: mpsc::Sender<Wake>,
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
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// Asks for consumers of `queue` to be woken. Never blocks.
    pub fn notify(&self, queue: &QueueName) {
        if self
            .tx
            .try_send(Wake::Queue(notify_channel(queue)))
            .is_err()
        {
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
            send_task_finished(&pool, tasks.into_iter().collect()).await;
        }
        if channels.is_empty() {
            continue;
        }
        let channels: Vec<String> = channels.into_iter().collect();
        let sent = sqlx::query("SELECT pg_notify(c, '') FROM unnest($1::text[]) AS c")
            .bind(&channels)
            .execute(&pool)
            .await;
        match sent {
            Ok(_) => metrics::counter!("tasker_queue_notifications_total")
                .increment(channels.len() as u64),
            // Consumers' fallback polls pick the work up; nothing is lost.
            Err(e) => tracing::debug!(error = %e, "queue notification not sent"),
        }
    }
}

async fn send_task_finished(pool: &PgPool, tasks: Vec<Uuid>) {
    let sent = sqlx::query(
        "SELECT pg_notify($1, t.task_uuid::text) FROM tasker.tasks t
          WHERE t.task_uuid = ANY ($2) AND t.state = ANY ($3)",
    )
    .bind(TASK_FINISHED_CHANNEL)
    .bind(&tasks)
    .bind(&TERMINAL_TASK_STATES[..])
    .execute(pool)
    .await;
    if let Err(e) = sent {
        // Waiters' fallback polls see the task finished; nothing is lost.
        tracing::debug!(error = %e, "task finished notification not sent");
    }
}
