//! Finalizing a task (tasker.finalize_task) looks at that task's failed and retrying steps
//! only, however many other tasks keep steps in error or waiting for a retry.

use std::time::{Duration, Instant};
use tasker_shared::testing::TestDatabase;
use uuid::Uuid;

/// A task in `task_state` with one step per entry of `states` (attempt `attempts` of 3,
/// retryable, a retry due in an hour for those waiting); its id.
async fn task(
    conn: &mut sqlx::PgConnection,
    named_task: Uuid,
    task_state: &str,
    states: &[&str],
    attempts: i32,
) -> Uuid {
    sqlx::query_scalar(
        "WITH t AS (
           INSERT INTO tasker.tasks (named_task_uuid, state) VALUES ($1, $2) RETURNING task_uuid
         ), s AS (
           INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
             max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, state, attempts,
             next_retry_at, last_error, parent_count, pending_parents)
           SELECT t.task_uuid, 'step_' || u.i, u.i, 'Examples::Noop', 3, true, 'none', 0, 0,
                  u.state, $4,
                  CASE WHEN u.state = 'waiting_for_retry' THEN now() + interval '1 hour' END,
                  CASE WHEN u.state IN ('error', 'waiting_for_retry')
                       THEN '{\"message\": \"boom\"}'::jsonb END,
                  0, 0
             FROM t CROSS JOIN unnest($3::text[]) WITH ORDINALITY AS u(state, i)
         )
         SELECT task_uuid FROM t",
    )
    .bind(named_task)
    .bind(task_state)
    .bind(states)
    .bind(attempts)
    .fetch_one(&mut *conn)
    .await
    .unwrap()
}

/// Entries read so far from the partial indexes on failed and retrying steps, once the
/// statistics system has the counts of `calls` calls of finalize_task.
async fn failure_index_reads(db: &TestDatabase, calls: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (reads, done): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT sum(idx_tup_read)::bigint FROM pg_stat_user_indexes
                      WHERE schemaname = 'tasker'
                        AND indexrelname IN ('workflow_steps_failed_idx', 'workflow_steps_retry_idx')),
                    coalesce((SELECT calls FROM pg_stat_user_functions
                               WHERE schemaname = 'tasker' AND funcname = 'finalize_task'), 0)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if done >= calls {
            return reads;
        }
        assert!(Instant::now() < deadline, "the statistics never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Before, both of finalize_task's looks at a task's failures (is a step waiting for a
/// retry; which steps failed for good) were planned as a scan of the whole partial index on
/// that state ANDed with the task's steps: every step kept in error, or waiting for a
/// retry in any task, read again for each task finalized.
#[tokio::test]
async fn finalizing_reads_only_the_tasks_own_failures() {
    let db = TestDatabase::new().await;
    let named_task: Uuid = sqlx::query_scalar(
        "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ('ns') RETURNING namespace_uuid)
         INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
         SELECT namespace_uuid, 't', '1', '{}' FROM ns RETURNING named_task_uuid",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut setup = db.pool.acquire().await.unwrap();
    // Other tasks: 1,000 kept in error and 1,000 waiting for retries, ten steps each.
    for _ in 0..1000 {
        task(&mut setup, named_task, "error", &["error"; 10], 3).await;
        task(
            &mut setup,
            named_task,
            "waiting_for_retry",
            &["waiting_for_retry"; 10],
            1,
        )
        .await;
    }
    let retrying = task(
        &mut setup,
        named_task,
        "steps_in_process",
        &["complete", "waiting_for_retry"],
        1,
    )
    .await;
    let failed = task(
        &mut setup,
        named_task,
        "steps_in_process",
        &["complete", "error"],
        3,
    )
    .await;
    // No ANALYZE: as on a database whose statistics lag its growth (autovacuum off, or not
    // yet run), the planner guesses a task's steps at half a percent of the table.

    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET track_functions = 'pl'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let before = failure_index_reads(&db, 0).await;
    let mut outcomes = Vec::new();
    for t in [retrying, failed] {
        let outcome: String = sqlx::query_scalar("SELECT tasker.finalize_task($1, 'test')")
            .bind(t)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        outcomes.push(outcome);
    }
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    let after = failure_index_reads(&db, 2).await;

    assert_eq!(outcomes, ["waiting_for_retry", "error"]);
    let failed_steps: serde_json::Value = sqlx::query_scalar(
        "SELECT metadata->'failed_steps' FROM tasker.task_transitions
          WHERE task_uuid = $1 AND to_state = 'error'",
    )
    .bind(failed)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        failed_steps,
        serde_json::json!([{"step": "step_2", "attempts": 3, "error": {"message": "boom"}}])
    );
    assert!(
        after - before < 100,
        "finalizing two tasks read {} entries of the failure indexes",
        after - before
    );
}
