//! Lock order between the background statements that release lost claims. The
//! expired-claims sweep (`release_expired_claims`) locks rows of `tasker.step_claims` first,
//! then the steps they name; the reaper (`reap_dead_workers`) must never wait for a claims'
//! row while it holds a step, or the two wait for each other until Postgres ends one.

use std::time::Duration;
use tasker_shared::testing::TestDatabase;
use uuid::Uuid;

/// A running task of namespace `ns` whose two steps are held, one by worker `a` and one by
/// `b`, both registered and gone (last seen ten seconds ago, their advisory locks free),
/// each claim noted in `tasker.step_claims` as a claim notes it. The steps' ids, `a`'s first.
async fn two_dead_workers_holding_steps(db: &TestDatabase) -> (Uuid, Uuid) {
    sqlx::raw_sql(
        "SELECT pgmq.create('worker_ns_queue');
         INSERT INTO tasker.namespaces (name) VALUES ('ns');
         INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
         SELECT namespace_uuid, 't', '1', '{}' FROM tasker.namespaces WHERE name = 'ns';
         INSERT INTO tasker.workers (worker_id, host, pid, namespaces, last_seen_at)
         VALUES ('a', 'gone', 1, ARRAY['ns'], clock_timestamp() - interval '10 seconds'),
                ('b', 'gone', 2, ARRAY['ns'], clock_timestamp() - interval '10 seconds');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let steps: Vec<Uuid> = sqlx::query_scalar(
        "WITH t AS (
           INSERT INTO tasker.tasks (named_task_uuid, state)
           SELECT named_task_uuid, 'steps_in_process' FROM tasker.named_tasks
           RETURNING task_uuid
         )
         INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, state, attempts,
           claim_owner, lease_expires_at, started_at, parent_count, pending_parents)
         SELECT t.task_uuid, 'step_' || w, i, 'Examples::Noop', 3, true, 'none', 0, 0,
                'in_progress', 1, w, clock_timestamp() + interval '1 hour', clock_timestamp(),
                0, 0
           FROM t CROSS JOIN unnest(ARRAY['a', 'b']) WITH ORDINALITY AS u(w, i)
         RETURNING step_uuid",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (worker, step) in ["a", "b"].iter().zip(&steps) {
        sqlx::query(
            "SELECT tasker.note_claims($1, ARRAY[$2::uuid], clock_timestamp() + interval '1 hour')",
        )
        .bind(worker)
        .bind(step)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    (steps[0], steps[1])
}

/// A sweep holds `b`'s claims' row while a reaper reaps `a` and `b`, then locks `a`'s step,
/// as a sweep locks the steps of its rows. A reaper that released `a`'s step before it took
/// `b`'s row would be waiting for the sweep while holding that step: a deadlock, which
/// Postgres ended by failing the reaper, the first of the two to have waited a second.
#[tokio::test]
async fn reaping_two_workers_beside_a_sweep_holding_a_claim_row_does_not_deadlock() {
    let db = TestDatabase::new().await;
    let (step_a, step_b) = two_dead_workers_holding_steps(&db).await;

    let mut sweep = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '10s'")
        .execute(&mut *sweep)
        .await
        .unwrap();
    sqlx::query("SELECT 1 FROM tasker.step_claims WHERE worker_id = 'b' FOR UPDATE")
        .execute(&mut *sweep)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let reaper = tokio::spawn(async move {
        sqlx::query_as::<_, (String, i32)>(
            "SELECT worker_id, released FROM tasker.reap_dead_workers(1000, 3600000, 'test')
              ORDER BY worker_id",
        )
        .fetch_all(&pool)
        .await
    });
    // Long enough for the reaper to reach b's row, which the sweep holds.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sqlx::query("SELECT 1 FROM tasker.workflow_steps WHERE step_uuid = $1 FOR NO KEY UPDATE")
        .bind(step_a)
        .execute(&mut *sweep)
        .await
        .unwrap();
    sweep.commit().await.unwrap();

    let reaped = tokio::time::timeout(Duration::from_secs(20), reaper)
        .await
        .expect("the reaper finished")
        .unwrap()
        .expect("the reaper was not ended by a deadlock");
    assert_eq!(reaped, [("a".to_string(), 1), ("b".to_string(), 1)]);
    let states: Vec<(String, i32)> = sqlx::query_as(
        "SELECT state, attempts FROM tasker.workflow_steps
          WHERE step_uuid = ANY ($1) ORDER BY name",
    )
    .bind([step_a, step_b])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        [("enqueued".to_string(), 1), ("enqueued".to_string(), 1)],
        "both steps back in the queue, their lost attempts counted"
    );
}
