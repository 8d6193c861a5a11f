//! Wake-up notifications for queue consumers, sent after the sending transaction commits.
//!
//! A NOTIFY inside a writing transaction makes Postgres hold one database-wide lock from
//! pre-commit through the WAL flush, which serialises every such commit (measured here: a
//! third of the engine's sessions queued on it). So senders commit first and then ask the
//! notifier, which sends `pg_notify` from its own tiny read-only transactions, folding the
//! channels that pile up while one is in flight into a single statement.

use super::{notify_channel, QueueName};
use sqlx::PgPool;
use std::collections::BTreeSet;
use tokio::sync::mpsc;

/// Pending wake-ups beyond this are dropped: one already queued for the channel suffices.
const BACKLOG: usize = 1024;

#[derive(Clone, Debug)]
pub struct Notifier {
    tx: mpsc::Sender<String>,
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
        if self.tx.try_send(notify_channel(queue)).is_err() {
            metrics::counter!("tasker_queue_notifications_coalesced_total").increment(1);
        }
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<String>) {
    while let Some(first) = rx.recv().await {
        let mut channels = BTreeSet::from([first]);
        while let Ok(c) = rx.try_recv() {
            channels.insert(c);
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
