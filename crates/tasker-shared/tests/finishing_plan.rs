//! The recording that finishes tasks (tasker.complete_steps) reaches each by its key, whatever
//! the tables held when the connection planned it.

use std::time::{Duration, Instant};
use tasker_shared::testing::TestDatabase;
use uuid::Uuid;

/// `tasks` tasks in steps_in_process, each with ten steps claimed by worker `w` (attempt 1).
async fn running_tasks(conn: &mut sqlx::PgConnection, named_task: Uuid, tasks: i32) -> Vec<Uuid> {
    sqlx::query_scalar(
        "WITH t AS (
           INSERT INTO tasker.tasks (named_task_uuid, state)
           SELECT $1, 'steps_in_process' FROM generate_series(1, $2) RETURNING task_uuid
         ), s AS (
           INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
             max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, state, attempts,
             claim_owner, lease_expires_at, parent_count, pending_parents)
           SELECT t.task_uuid, 'noop_' || i, i, 'Examples::Noop', 3, true, 'none', 0, 0,
                  'in_progress', 1, 'w', now() + interval '1 hour', 0, 0
             FROM t CROSS JOIN generate_series(0, 9) AS i
         )
         SELECT task_uuid FROM t",
    )
    .bind(named_task)
    .bind(tasks)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

/// This session's counts reach the statistics system when it next goes idle.
async fn flush_stats(conn: &mut sqlx::PgConnection) {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
}

/// Records every step of `task` as a plain success on `conn`, finishing the task.
async fn record_all(conn: &mut sqlx::PgConnection, task: Uuid) {
    let finished: i64 = sqlx::query_scalar(
        "WITH r AS (
           SELECT jsonb_agg(jsonb_build_object('step_uuid', s.step_uuid, 'attempt', 1,
                                               'success', true, 'result', '{}'::jsonb,
                                               'execution_ms', 0)) AS results
             FROM tasker.workflow_steps s WHERE s.task_uuid = $1
         )
         SELECT count(*) FROM r, tasker.complete_steps('w', r.results, 0, 0) AS c
          WHERE c.outcome = 'completed'",
    )
    .bind(task)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(finished, 10);
    let state: String = sqlx::query_scalar("SELECT state FROM tasker.tasks WHERE task_uuid = $1")
        .bind(task)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(state, "complete");
}

/// Entries of tasks_active_idx read so far, once the statistics system has at least
/// `steps` step rows inserted and `updates` task rows updated (so every earlier statement's
/// counts are in).
async fn active_index_reads(db: &TestDatabase, steps: i64, updates: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (reads, inserted, updated): (i64, i64, i64) = sqlx::query_as(
            "SELECT (SELECT idx_tup_read FROM pg_stat_user_indexes
                      WHERE schemaname = 'tasker' AND indexrelname = 'tasks_active_idx'),
                    (SELECT n_tup_ins FROM pg_stat_user_tables
                      WHERE schemaname = 'tasker' AND relname = 'workflow_steps'),
                    (SELECT n_tup_upd FROM pg_stat_user_tables
                      WHERE schemaname = 'tasker' AND relname = 'tasks')",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if inserted >= steps && updated >= updates {
            return reads;
        }
        assert!(Instant::now() < deadline, "the statistics never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A plan made while `tasks` held a page joined each finished task to tasks_active_idx
/// (whose predicate its state matched) and filtered on the key: active tasks, and old
/// versions of tasks not yet vacuumed, read again for each task a recording finished, for as
/// long as the connection lived (657 entries a finished task in one bench run).
#[tokio::test]
async fn finishing_a_task_reads_no_other_active_task() {
    let db = TestDatabase::new().await;
    let ns: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.namespaces (name) VALUES ('ns') RETURNING namespace_uuid",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let named_task: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
         VALUES ($1, 't', '1', '{}') RETURNING named_task_uuid",
    )
    .bind(ns)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut setup = db.pool.acquire().await.unwrap();
    let mut recorder = db.pool.acquire().await.unwrap();
    // The first recording plans the statement on a one-page table.
    let first = running_tasks(&mut setup, named_task, 1).await;
    record_all(&mut recorder, first[0]).await;
    flush_stats(&mut recorder).await;

    running_tasks(&mut setup, named_task, 3000).await;
    // The plan's scan of the state index stops at the task it looks for: the one stored
    // last is the one it would find last.
    let last: Uuid = sqlx::query_scalar(
        "SELECT task_uuid FROM tasker.tasks WHERE state = 'steps_in_process' ORDER BY ctid DESC LIMIT 1",
    )
    .fetch_one(&mut *setup)
    .await
    .unwrap();
    flush_stats(&mut setup).await;
    let before = active_index_reads(&db, 30_010, 1).await;
    record_all(&mut recorder, last).await;
    flush_stats(&mut recorder).await;
    let after = active_index_reads(&db, 30_010, 2).await;
    eprintln!("before {before} after {after}");
    assert!(
        after - before < 100,
        "finishing one task read {} entries of tasks_active_idx",
        after - before
    );
}
