use super::{Notifier, QueueName};
use pgmq::PGMQueueExt;
use serde::Serialize;
use sqlx::{PgPool, Postgres};

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("queue {queue}: {source}")]
    Pgmq {
        queue: String,
        #[source]
        source: pgmq::PgmqError,
    },
    #[error("queue {queue}: {source}")]
    Database {
        queue: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("invalid queue name: {0}")]
    InvalidName(String),
}

impl QueueError {
    /// Maps a PGMQ error of an operation on `queue`.
    fn pgmq(queue: &QueueName) -> impl FnOnce(pgmq::PgmqError) -> Self + '_ {
        move |source| Self::Pgmq {
            queue: queue.to_string(),
            source,
        }
    }

    /// Maps a database error of an operation on `queue`.
    fn database(queue: &QueueName) -> impl FnOnce(sqlx::Error) -> Self + '_ {
        move |source| Self::Database {
            queue: queue.to_string(),
            source,
        }
    }
}

/// One message as read: its id and its raw JSON body (decoding is the consumer's job, so a
/// malformed body can be archived with the reason instead of failing the whole read).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueuedMessage {
    pub msg_id: i64,
    pub read_ct: i32,
    pub enqueued_at: chrono::DateTime<chrono::Utc>,
    pub message: serde_json::Value,
}

/// Typed access to PGMQ. Sends take an executor so they can join the caller's transaction.
#[derive(Clone)]
pub struct QueueClient {
    pool: PgPool,
    pgmq: PGMQueueExt,
    notifier: Notifier,
}

impl std::fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueClient").finish_non_exhaustive()
    }
}

impl QueueClient {
    pub async fn new(pool: PgPool) -> Self {
        let pgmq = PGMQueueExt::new_with_pool(pool.clone()).await;
        let notifier = Notifier::spawn(pool.clone());
        Self {
            pool,
            pgmq,
            notifier,
        }
    }

    /// Wakes the queue's consumers; call after the transaction that sent has committed.
    pub fn notify(&self, queue: &QueueName) {
        self.notifier.notify(queue);
    }

    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Creates the queue if missing, with a table whose reads are HOT updates (see
    /// `tasker.prepare_queue_table`).
    pub async fn ensure_queue(&self, queue: &QueueName) -> Result<(), QueueError> {
        self.pgmq
            .create(queue.as_str())
            .await
            .map_err(QueueError::pgmq(queue))?;
        sqlx::query("SELECT tasker.prepare_queue_table($1)")
            .bind(queue.as_str())
            .execute(&self.pool)
            .await
            .map_err(QueueError::database(queue))?;
        Ok(())
    }

    pub async fn send<'c, E, T>(
        &self,
        queue: &QueueName,
        body: &T,
        executor: E,
    ) -> Result<i64, QueueError>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
        T: Serialize,
    {
        self.pgmq
            .send_with_cxn(queue.as_str(), body, executor)
            .await
            .map_err(QueueError::pgmq(queue))
    }

    pub async fn send_batch<'c, E, T>(
        &self,
        queue: &QueueName,
        bodies: &[T],
        executor: E,
    ) -> Result<Vec<i64>, QueueError>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
        T: Serialize,
    {
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        self.pgmq
            .send_batch_with_cxn(queue.as_str(), bodies, executor)
            .await
            .map_err(QueueError::pgmq(queue))
    }

    /// Reads up to `qty` messages and hides them for `visibility_timeout_seconds`. The read
    /// commits without waiting for the WAL flush: a hiding lost in a crash only shows the
    /// messages again, and everything done with them is checked against the database.
    pub async fn read(
        &self,
        queue: &QueueName,
        visibility_timeout_seconds: i32,
        qty: i32,
    ) -> Result<Vec<QueuedMessage>, QueueError> {
        sqlx::query_as::<_, QueuedMessage>(
            "SELECT msg_id, read_ct, enqueued_at, message FROM tasker.read_messages($1::text, $2::integer, $3::integer)",
        )
        .bind(queue.as_str())
        .bind(visibility_timeout_seconds)
        .bind(qty)
        .fetch_all(&self.pool)
        .await
        .map_err(QueueError::database(queue))
    }

    pub async fn delete<'c, E>(
        &self,
        queue: &QueueName,
        msg_id: i64,
        executor: E,
    ) -> Result<bool, QueueError>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
    {
        self.pgmq
            .delete_with_cxn(queue.as_str(), msg_id, executor)
            .await
            .map_err(QueueError::pgmq(queue))
    }

    pub async fn delete_batch<'c, E>(
        &self,
        queue: &QueueName,
        ids: &[i64],
        executor: E,
    ) -> Result<usize, QueueError>
    where
        E: sqlx::Executor<'c, Database = Postgres>,
    {
        if ids.is_empty() {
            return Ok(0);
        }
        self.pgmq
            .delete_batch_with_cxn(queue.as_str(), ids, executor)
            .await
            .map_err(QueueError::pgmq(queue))
    }

    /// Moves a message to the queue's archive table (kept for inspection, never redelivered).
    pub async fn archive(&self, queue: &QueueName, msg_id: i64) -> Result<bool, QueueError> {
        self.pgmq
            .archive(queue.as_str(), msg_id)
            .await
            .map_err(QueueError::pgmq(queue))
    }

    /// Hides messages for another `seconds` from now (long-running handlers). Messages
    /// another transaction holds right now (being read or deleted) are skipped, never
    /// waited for, so this cannot deadlock with a worker recording results. By `msg_id =
    /// ANY`, not a semi-join, so no plan walks the whole queue (see the worker's claim).
    pub async fn extend_visibility(
        &self,
        queue: &QueueName,
        ids: &[i64],
        seconds: i32,
    ) -> Result<(), QueueError> {
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "UPDATE {q} SET vt = clock_timestamp() + make_interval(secs => $2)
              WHERE msg_id = ANY (ARRAY(SELECT msg_id FROM {q} WHERE msg_id = ANY($1)
                                         FOR UPDATE SKIP LOCKED))",
            q = queue.table()
        ))
        .bind(ids)
        .bind(f64::from(seconds))
        .execute(&self.pool)
        .await
        .map_err(QueueError::database(queue))?;
        Ok(())
    }

    /// Messages waiting (visible or not) in the queue.
    pub async fn depth(&self, queue: &QueueName) -> Result<i64, QueueError> {
        sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {}", queue.table()))
            .fetch_one(&self.pool)
            .await
            .map_err(QueueError::database(queue))
    }
}
