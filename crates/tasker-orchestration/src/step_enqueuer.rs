//! StepEnqueuer: moves ready steps to `enqueued` and sends their worker messages in the same
//! transaction (SQL `enqueue_steps_of`, reached through `finalize_task`).
//!
//! Most enqueueing happens inline, in the transaction that makes a step ready: task creation
//! enqueues the roots, and each processed result (woken by NOTIFY on the results queue)
//! enqueues the children it unblocked. What no transaction triggers is time: a retry whose
//! backoff expires. This component's loop covers that, sleeping until the earliest pending
//! retry (never longer than the fallback interval), and also re-finalizes active tasks that
//! have sat unchanged with ready steps (anything missed). It works in batches: one round
//! trip finalizes up to `enqueue_batch_size` tasks.

use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::queue::{worker_queue, Notifier};
use tokio_util::sync::CancellationToken;

/// Task states in which the engine still moves steps (as in finalize_task).
const ACTIVE: &str = "'enqueuing_steps', 'steps_in_process', 'evaluating_results', 'waiting_for_dependencies', 'waiting_for_retry'";

pub struct StepEnqueuer {
    pool: PgPool,
    notifier: Notifier,
    interval: Duration,
    batch: i64,
    actor: String,
}

impl StepEnqueuer {
    pub fn new(
        pool: PgPool,
        notifier: Notifier,
        interval: Duration,
        batch: u32,
        actor: String,
    ) -> Self {
        Self {
            pool,
            notifier,
            interval,
            batch: i64::from(batch),
            actor,
        }
    }

    /// Finalizes (and so enqueues the ready steps of) the given tasks in one round trip, then
    /// wakes the workers of their namespaces. Returns how many tasks it finalized.
    pub async fn finalize(&self, tasks: &[(uuid::Uuid, String)]) -> Result<usize, sqlx::Error> {
        if tasks.is_empty() {
            return Ok(0);
        }
        let mut ids: Vec<uuid::Uuid> = tasks.iter().map(|(t, _)| *t).collect();
        ids.sort();
        ids.dedup();
        // Sorted, so concurrent finalizers lock task rows in one order.
        sqlx::query("SELECT tasker.finalize_task(t, $2) FROM unnest($1::uuid[]) AS t ORDER BY t")
            .bind(&ids)
            .bind(&self.actor)
            .execute(&self.pool)
            .await?;
        let namespaces: std::collections::BTreeSet<&str> =
            tasks.iter().map(|(_, ns)| ns.as_str()).collect();
        for ns in namespaces {
            if let Ok(queue) = worker_queue(ns) {
                self.notifier.notify(&queue);
            }
        }
        Ok(ids.len())
    }

    /// One pass: tasks with expired retries, then stale active tasks that have ready steps.
    /// Returns how many tasks it finalized. The retries are found through
    /// `workflow_steps_retry_idx` (see [`Self::by_retry_index`]).
    pub async fn sweep(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.by_retry_index().await?;
        let due: Vec<(uuid::Uuid, String)> = sqlx::query_as(&format!(
            "SELECT DISTINCT s.task_uuid, n.name FROM tasker.workflow_steps s
               JOIN tasker.tasks t USING (task_uuid)
               JOIN tasker.named_tasks nt USING (named_task_uuid)
               JOIN tasker.namespaces n USING (namespace_uuid)
              WHERE s.next_retry_at IS NOT NULL AND s.state = 'waiting_for_retry'
                AND s.next_retry_at <= clock_timestamp() AND t.state IN ({ACTIVE})
              LIMIT $1"
        ))
        .bind(self.batch)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut n = self.finalize(&due).await?;
        if !due.is_empty() {
            metrics::counter!("tasker_retries_enqueued_total").increment(due.len() as u64);
        }
        let stale: Vec<(uuid::Uuid, String)> = sqlx::query_as(&format!(
            // Old active tasks with a step that could be ready: the tasks first
            // (tasks_active_idx), then each one's steps (a LATERAL with LIMIT is probed
            // per task, never turned into a scan of every step ever created); readiness,
            // which is dear, only for those.
            "WITH old AS MATERIALIZED (
               SELECT t.task_uuid, t.named_task_uuid FROM tasker.tasks t
                CROSS JOIN LATERAL (
                  SELECT 1 FROM tasker.workflow_steps s
                   WHERE s.task_uuid = t.task_uuid
                     AND s.state IN ('pending', 'waiting_for_retry')
                     AND coalesce(s.pending_parents, 0) = 0
                   LIMIT 1) AS candidate
                WHERE t.state IN ({ACTIVE})
                  AND t.updated_at < now() - make_interval(secs => $2))
             SELECT t.task_uuid, n.name FROM old t
               JOIN tasker.named_tasks nt USING (named_task_uuid)
               JOIN tasker.namespaces n USING (namespace_uuid)
              WHERE EXISTS (SELECT 1 FROM tasker.get_step_readiness_status(t.task_uuid) r
                             WHERE r.ready_for_execution)
              LIMIT $1"
        ))
        .bind(self.batch)
        .bind(self.interval.as_secs_f64() * 5.0)
        .fetch_all(&self.pool)
        .await?;
        if !stale.is_empty() {
            tracing::info!(
                tasks = stale.len(),
                "enqueueing ready steps of tasks that were left waiting"
            );
            metrics::counter!("tasker_stale_tasks_recovered_total").increment(stale.len() as u64);
            n += self.finalize(&stale).await?;
        }
        Ok(n)
    }

    /// A transaction whose statements reach the steps waiting for a retry through
    /// `workflow_steps_retry_idx` (its predicate, `next_retry_at IS NOT NULL`, written out in
    /// them) by a plain index scan. Without statistics on the steps (autovacuum has not
    /// analyzed them yet) the planner takes that index to hold every step and scans the
    /// whole table instead, a cost that follows the steps kept; a bitmap scan would not mark
    /// the entries of steps no longer waiting dead.
    async fn by_retry_index(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL enable_seqscan = off")
            .execute(&mut *tx)
            .await?;
        sqlx::query("SET LOCAL enable_bitmapscan = off")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    async fn next_wake(&self) -> Duration {
        let next: Result<Option<f64>, sqlx::Error> = async {
            let mut tx = self.by_retry_index().await?;
            let next = sqlx::query_scalar(&format!(
                "SELECT extract(epoch FROM min(s.next_retry_at) - clock_timestamp())::float8
                   FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid)
                  WHERE s.next_retry_at IS NOT NULL AND s.state = 'waiting_for_retry'
                    AND t.state IN ({ACTIVE})"
            ))
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(next)
        }
        .await;
        match next {
            Ok(Some(secs)) if secs > 0.0 => Duration::from_secs_f64(secs).min(self.interval),
            Ok(Some(_)) => Duration::ZERO,
            _ => self.interval,
        }
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            match self.sweep().await {
                Ok(n) if n as i64 == self.batch => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "enqueue sweep failed; will try again"),
            }
            let wait = self.next_wake().await.max(Duration::from_millis(5));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
