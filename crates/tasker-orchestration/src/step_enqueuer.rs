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

/// The steps waiting for a retry, with their tasks and times, read first and on their own
/// (a materialized CTE) through `workflow_steps_retry_idx`, whose predicate this repeats;
/// their tasks are then looked up by key ([`task_of_due`]). Joined to the tasks in one
/// query, the planner (with no statistics, as where autovacuum is off) started from the
/// tasks and read every task kept: 60 ms a sweep at 43,000 tasks, every second.
const RETRYING: &str = "SELECT s.task_uuid, s.next_retry_at FROM tasker.workflow_steps s
                         WHERE s.next_retry_at IS NOT NULL AND s.state = 'waiting_for_retry'";

/// Active tasks with a retry due now and their namespaces, at most `$1`.
fn due_retries_statement() -> String {
    format!(
        "WITH due AS MATERIALIZED ({RETRYING} AND s.next_retry_at <= clock_timestamp())
         SELECT DISTINCT d.task_uuid, n.name FROM due d
           CROSS JOIN LATERAL ({}) t
           JOIN tasker.named_tasks nt USING (named_task_uuid)
           JOIN tasker.namespaces n USING (namespace_uuid)
          LIMIT $1",
        task_of_due()
    )
}

/// Seconds until the earliest retry of an active task (negative when one is due; NULL
/// when none waits).
fn next_retry_statement() -> String {
    format!(
        "WITH due AS MATERIALIZED ({RETRYING})
         SELECT extract(epoch FROM min(d.next_retry_at) - clock_timestamp())::float8
           FROM due d CROSS JOIN LATERAL ({}) t",
        task_of_due()
    )
}

/// The task of a retrying step `d`, if active, by key: the LIMIT keeps the planner from
/// folding it into a join it could run as a scan of the tasks (or of the index of active
/// ones, which holds every version of a task that was ever running until a vacuum).
fn task_of_due() -> String {
    format!(
        "SELECT t.named_task_uuid FROM tasker.tasks t
          WHERE t.task_uuid = d.task_uuid AND t.state IN ({ACTIVE}) LIMIT 1"
    )
}

/// Active tasks unchanged for `$2` seconds with a step that could be ready, at most `$1`,
/// with their namespaces: the tasks first, through `tasks_active_idx` by a plain index scan
/// (see [`StepEnqueuer::by_index_scans`]), then each one's steps (a LATERAL with LIMIT is
/// probed per task, never turned into a scan of every step ever created); readiness, which is
/// dear, only for those.
fn stale_tasks_statement() -> String {
    format!(
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
    )
}

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
    /// `workflow_steps_retry_idx` (see [`Self::by_index_scans`]).
    pub async fn sweep(&self) -> Result<usize, sqlx::Error> {
        let mut tx = self.by_index_scans().await?;
        let due: Vec<(uuid::Uuid, String)> = sqlx::query_as(&due_retries_statement())
            .bind(self.batch)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut n = self.finalize(&due).await?;
        if !due.is_empty() {
            metrics::counter!("tasker_retries_enqueued_total").increment(due.len() as u64);
        }
        let mut tx = self.by_index_scans().await?;
        let stale: Vec<(uuid::Uuid, String)> = sqlx::query_as(&stale_tasks_statement())
            .bind(self.batch)
            .bind(self.interval.as_secs_f64() * 5.0)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
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

    /// A transaction whose statements read the partial indexes of what is waiting by plain
    /// index scans: the steps waiting for a retry through `workflow_steps_retry_idx` (its
    /// predicate, `next_retry_at IS NOT NULL`, written out in them), the active tasks through
    /// `tasks_active_idx`. Both hold an entry for every version that ever matched until a
    /// vacuum (every task that was ever running, every step that ever waited). A plain index
    /// scan marks the entries of dead versions as it passes them, and later scans skip them;
    /// a bitmap scan marks nothing and visits every such task's page on every sweep, and
    /// without statistics (autovacuum has not analyzed the table yet) the planner may scan
    /// the whole table instead: costs that follow the tasks and steps kept.
    async fn by_index_scans(&self) -> Result<sqlx::Transaction<'_, sqlx::Postgres>, sqlx::Error> {
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
            let mut tx = self.by_index_scans().await?;
            let next = sqlx::query_scalar(&next_retry_statement())
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

#[cfg(test)]
mod tests {
    use super::*;
    use tasker_shared::testing::TestDatabase;

    /// Every node of a JSON plan, depth first.
    fn nodes(plan: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
        out.push(plan.clone());
        for child in plan["Plans"].as_array().into_iter().flatten() {
            nodes(child, out);
        }
        for cte in plan["InitPlan"].as_array().into_iter().flatten() {
            nodes(cte, out);
        }
    }

    /// The scans of `tasker.tasks` in `statement`'s plan, planned (with `options`, such as
    /// `ANALYZE, BUFFERS`) in the transaction the enqueuer runs it in.
    async fn scans_of_tasks(
        enqueuer: &StepEnqueuer,
        statement: &str,
        options: &str,
    ) -> Vec<serde_json::Value> {
        let mut tx = enqueuer.by_index_scans().await.unwrap();
        let explained: serde_json::Value = sqlx::query_scalar(&format!(
            "EXPLAIN ({options} FORMAT JSON) {}",
            statement.replace("$1", "100").replace("$2", "5")
        ))
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
        let mut all = Vec::new();
        nodes(&explained[0]["Plan"], &mut all);
        all.retain(|n| n["Relation Name"] == "tasks");
        all
    }

    /// An enqueuer over `db`, a sweep a second, batches of 100.
    fn enqueuer_of(db: &TestDatabase) -> StepEnqueuer {
        StepEnqueuer::new(
            db.pool.clone(),
            Notifier::spawn(db.pool.clone()),
            Duration::from_secs(1),
            100,
            "test".into(),
        )
    }

    /// Pages of shared buffers the plan node read or found.
    fn pages(node: &serde_json::Value) -> i64 {
        node["Shared Hit Blocks"].as_i64().unwrap() + node["Shared Read Blocks"].as_i64().unwrap()
    }

    /// The sweep for due retries and the look for the next one read the steps waiting for a
    /// retry first and reach their tasks by key, never by a scan of the tasks (or of the
    /// index of active ones, which holds every version of a task that was ever running until
    /// a vacuum): whatever the planner estimates, their cost follows the retries waiting,
    /// not the tasks kept. Planned here with 3,000 finished tasks of ten steps, beside one
    /// task whose step's retry is due, which the sweep then enqueues.
    #[tokio::test]
    async fn looking_for_retries_reaches_tasks_only_by_key() {
        let db = TestDatabase::new().await;
        let retrying: uuid::Uuid = sqlx::query_scalar(
            "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ('ns') RETURNING namespace_uuid),
                  nt AS (INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
                         SELECT namespace_uuid, 't', '1', '{}' FROM ns RETURNING named_task_uuid),
                  done AS (INSERT INTO tasker.tasks (named_task_uuid, state)
                           SELECT named_task_uuid, 'steps_in_process'
                             FROM nt CROSS JOIN generate_series(1, 3000)
                           RETURNING task_uuid),
                  done_steps AS (INSERT INTO tasker.workflow_steps (task_uuid, name, position,
                                   handler_callable, max_attempts, retryable, backoff,
                                   backoff_base_ms, max_backoff_ms, state, attempts,
                                   parent_count, pending_parents)
                                 SELECT task_uuid, 'noop_' || i, i, 'Examples::Noop', 3, true,
                                        'none', 0, 0, 'complete', 1, 0, 0
                                   FROM done CROSS JOIN generate_series(0, 9) AS i),
                  open AS (INSERT INTO tasker.tasks (named_task_uuid, state)
                           SELECT named_task_uuid, 'steps_in_process' FROM nt
                           RETURNING task_uuid)
             INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
               max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, state,
               attempts, last_error, next_retry_at, parent_count, pending_parents)
             SELECT task_uuid, 'flaky', 0, 'Examples::Noop', 3, true, 'none', 0, 0,
                    'waiting_for_retry', 1, '{\"message\": \"failed once\"}', now(), 0, 0
               FROM open RETURNING task_uuid",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        sqlx::query(
            "UPDATE tasker.tasks SET state = 'complete', completed_at = now()
              WHERE task_uuid <> $1",
        )
        .bind(retrying)
        .execute(&db.pool)
        .await
        .unwrap();

        sqlx::query("SELECT pgmq.create('worker_ns_queue')")
            .execute(&db.pool)
            .await
            .unwrap();
        let enqueuer = enqueuer_of(&db);

        for statement in [due_retries_statement(), next_retry_statement()] {
            let scans = scans_of_tasks(&enqueuer, &statement, "").await;
            assert!(!scans.is_empty(), "no scan of tasks in {statement}");
            for scan in scans {
                let cond = scan["Index Cond"].as_str().unwrap_or_default();
                assert!(
                    scan["Index Name"] == "tasks_pkey" && cond.contains("task_uuid"),
                    "tasks read by {} {} ({cond}) in {statement}",
                    scan["Node Type"],
                    scan["Index Name"]
                );
            }
        }
        assert_eq!(enqueuer.next_wake().await, Duration::ZERO);
        assert_eq!(enqueuer.sweep().await.unwrap(), 1);
        let state: String =
            sqlx::query_scalar("SELECT state FROM tasker.workflow_steps WHERE task_uuid = $1")
                .bind(retrying)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(state, "enqueued");
        assert_eq!(enqueuer.next_wake().await, Duration::from_secs(1));
    }

    /// The sweep for stale tasks reads the active ones through `tasks_active_idx`, which
    /// holds an entry for every version of every task that was ever active until a vacuum.
    /// By a plain index scan it visits a finished task's entries once, marks them dead, and
    /// skips them after: its cost follows the tasks active, not the tasks kept. (By a bitmap
    /// scan it read every finished task's page on every sweep, once a second.)
    #[tokio::test]
    async fn the_stale_task_sweep_passes_finished_tasks_once_then_skips_them() {
        let db = TestDatabase::new().await;
        sqlx::query(
            "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ('ns') RETURNING namespace_uuid),
                  nt AS (INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
                         SELECT namespace_uuid, 't', '1', '{}' FROM ns RETURNING named_task_uuid)
             INSERT INTO tasker.tasks (named_task_uuid, state, context)
             SELECT named_task_uuid, 'steps_in_process', jsonb_build_object('pad', repeat('x', 1000))
               FROM nt CROSS JOIN generate_series(1, 5000)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        // Committed durably: until its commit is flushed no reader may mark the old
        // versions committed-dead, so none could mark their index entries either.
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::query("SET LOCAL synchronous_commit = on")
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query("UPDATE tasker.tasks SET state = 'complete', completed_at = now()")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let enqueuer = enqueuer_of(&db);

        // Tasks as wide as real ones (a context, transitions): a page holds a few.
        let heap_pages: i64 = sqlx::query_scalar("SELECT pg_relation_size('tasker.tasks') / 8192")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let statement = stale_tasks_statement();
        let pass = || async {
            let scans = scans_of_tasks(&enqueuer, &statement, "ANALYZE, BUFFERS,").await;
            assert_eq!(scans.len(), 1, "{scans:?}");
            let scan = &scans[0];
            assert!(
                scan["Node Type"] == "Index Scan" && scan["Index Name"] == "tasks_active_idx",
                "tasks read by {} {}",
                scan["Node Type"],
                scan["Index Name"]
            );
            assert_eq!(scan["Actual Rows"], 0);
            pages(scan)
        };
        // The first pass visits the page of every finished task's active version (half the
        // table: the update wrote each task again).
        let first = pass().await;
        assert!(
            first >= heap_pages / 2,
            "first pass read {first} pages of {heap_pages}"
        );
        // A pass marks an entry dead once its version is older than every transaction
        // running (in any database: tests run beside this one); from then on a pass reads
        // only the index's pages.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut later = pass().await;
        while later * 10 >= first && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            later = pass().await;
        }
        assert!(
            later * 10 < first,
            "passes still read {later} pages, the first {first}"
        );
        assert_eq!(enqueuer.sweep().await.unwrap(), 0);
    }
}
