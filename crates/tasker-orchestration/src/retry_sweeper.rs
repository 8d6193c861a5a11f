//! Re-finalizes tasks whose retry backoff has expired, so retries need no outside nudge.
//! It sleeps until the earliest pending retry (never longer than the fallback interval).

use sqlx::PgPool;
use std::time::Duration;
use tasker_shared::queue::{worker_queue, Notifier};
use tokio_util::sync::CancellationToken;

/// Task states in which the engine still moves steps (as in finalize_task).
const ACTIVE: &str = "'enqueuing_steps', 'steps_in_process', 'evaluating_results', 'waiting_for_dependencies', 'waiting_for_retry'";

pub struct RetrySweeper {
    pool: PgPool,
    notifier: Notifier,
    interval: Duration,
    batch: i64,
    actor: String,
}

impl RetrySweeper {
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

    /// Finalizes up to one batch of tasks with expired retries; returns how many.
    pub async fn sweep(&self) -> Result<usize, sqlx::Error> {
        let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(&format!(
            "SELECT DISTINCT s.task_uuid, n.name FROM tasker.workflow_steps s
               JOIN tasker.tasks t USING (task_uuid)
               JOIN tasker.named_tasks nt USING (named_task_uuid)
               JOIN tasker.namespaces n USING (namespace_uuid)
              WHERE s.state = 'waiting_for_retry' AND s.next_retry_at <= clock_timestamp()
                AND t.state IN ({ACTIVE})
              LIMIT $1"
        ))
        .bind(self.batch)
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let tasks: Vec<uuid::Uuid> = rows.iter().map(|(t, _)| *t).collect();
        sqlx::query("SELECT tasker.finalize_task(t, $2) FROM unnest($1::uuid[]) AS t ORDER BY t")
            .bind(&tasks)
            .bind(&self.actor)
            .execute(&self.pool)
            .await?;
        metrics::counter!("tasker_retry_sweeps_total").increment(1);
        let namespaces: std::collections::BTreeSet<&str> =
            rows.iter().map(|(_, ns)| ns.as_str()).collect();
        for ns in namespaces {
            if let Ok(queue) = worker_queue(ns) {
                self.notifier.notify(&queue);
            }
        }
        Ok(tasks.len())
    }

    async fn next_wake(&self) -> Duration {
        let next: Result<Option<f64>, _> = sqlx::query_scalar(&format!(
            "SELECT extract(epoch FROM min(s.next_retry_at) - clock_timestamp())::float8
               FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid)
              WHERE s.state = 'waiting_for_retry' AND t.state IN ({ACTIVE})"
        ))
        .fetch_one(&self.pool)
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
                Err(e) => tracing::warn!(error = %e, "retry sweep failed; will try again"),
            }
            let wait = self.next_wake().await.max(Duration::from_millis(5));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}
