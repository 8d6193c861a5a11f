//! The heartbeat's renewal (tasker.renew_leases) judges the steps it could not renew by
//! their own rows and audit rows, not by reading the worker's whole recorded history.

use std::time::{Duration, Instant};
use tasker_shared::testing::TestDatabase;
use uuid::Uuid;

/// Entries of workflow_steps_recorded_idx read so far, once the statistics system has the
/// counts of at least `calls` calls of renew_leases (so every earlier statement's are in).
async fn recorded_index_reads(db: &TestDatabase, calls: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (reads, done): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT idx_tup_read FROM pg_stat_user_indexes
                      WHERE schemaname = 'tasker' AND indexrelname = 'workflow_steps_recorded_idx'),
                    coalesce((SELECT calls FROM pg_stat_user_functions
                               WHERE schemaname = 'tasker' AND funcname = 'renew_leases'), 0)",
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

/// A task with `steps` steps in `state`, attempt 1, recorded by `recorded_by` (or none).
async fn steps(
    conn: &mut sqlx::PgConnection,
    named_task: Uuid,
    steps: i32,
    state: &str,
    recorded_by: Option<&str>,
) -> Vec<Uuid> {
    sqlx::query_scalar(
        "WITH t AS (
           INSERT INTO tasker.tasks (named_task_uuid, state)
           VALUES ($1, 'steps_in_process') RETURNING task_uuid
         )
         INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, state, attempts,
           recorded_by, completed_at, parent_count, pending_parents)
         SELECT t.task_uuid, 'noop_' || i, i, 'Examples::Noop', 3, true, 'none', 0, 0,
                $3, 1, $4, CASE WHEN $4 IS NOT NULL THEN now() END, 0, 0
           FROM t CROSS JOIN generate_series(1, $2) AS i
         RETURNING step_uuid",
    )
    .bind(named_task)
    .bind(steps)
    .bind(state)
    .bind(recorded_by)
    .fetch_all(&mut *conn)
    .await
    .unwrap()
}

/// Before, the check of steps it could not renew went through the view step_result_audits,
/// whose generic plan read every step the worker had ever recorded: each heartbeat that
/// found a step being recorded (common under load) paid for the whole history kept.
#[tokio::test]
async fn a_renewal_judges_lost_steps_without_reading_the_history() {
    let db = TestDatabase::new().await;
    let named_task: Uuid = sqlx::query_scalar(
        "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ('ns') RETURNING namespace_uuid)
         INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
         SELECT namespace_uuid, 't', '1', '{}' FROM ns RETURNING named_task_uuid",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET track_functions = 'pl'")
        .execute(&mut *conn)
        .await
        .unwrap();
    steps(&mut conn, named_task, 20_000, "complete", Some("w")).await;
    // Not this worker's any more: one another worker recorded, one released (enqueued again),
    // one whose failure this worker recorded in the audit log, one this worker recorded.
    let theirs = steps(&mut conn, named_task, 1, "complete", Some("other")).await[0];
    let released = steps(&mut conn, named_task, 1, "enqueued", None).await[0];
    let failed = steps(&mut conn, named_task, 1, "waiting_for_retry", None).await[0];
    let recorded = steps(&mut conn, named_task, 1, "complete", Some("w")).await[0];
    sqlx::query(
        "INSERT INTO tasker.step_result_audit_log (step_uuid, task_uuid, attempt, worker_id,
           success, error, execution_time_ms)
         SELECT step_uuid, task_uuid, 1, 'w', false, '{}', 0
           FROM tasker.workflow_steps WHERE step_uuid = $1",
    )
    .bind(failed)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    let before = recorded_index_reads(&db, 0).await;

    let mut lost: Vec<Uuid> = sqlx::query_scalar("SELECT * FROM tasker.renew_leases($1, 'w', 60)")
        .bind(vec![theirs, released, failed, recorded])
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
    let after = recorded_index_reads(&db, 1).await;

    lost.sort();
    let mut expected = vec![theirs, released];
    expected.sort();
    assert_eq!(lost, expected, "lost: another's and the released step only");
    assert!(
        after - before < 100,
        "judging four steps read {} entries of workflow_steps_recorded_idx",
        after - before
    );
}
