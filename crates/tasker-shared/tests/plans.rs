//! Plans that must not read what a statement does not touch. The hot functions plan once per
//! connection (generic plans), often while the tables are small or their statistics stale;
//! a plan that reaches rows through a partial index on state, or through a view, reads every
//! entry of it: a cost that follows the open tasks, or the history kept. Each test plans a
//! function's statement the way it happened, and counts the index entries it reads.
//! The last two tests hold the steps' writes to what makes them cheap: updates heap-only
//! (HOT), with no index entry written, and inserts without a foreign key's check per row.

use std::time::{Duration, Instant};
use tasker_shared::testing::TestDatabase;
use uuid::Uuid;

/// A namespace and a template to hang tasks on; the template's id.
async fn named_task(db: &TestDatabase) -> Uuid {
    sqlx::query_scalar(
        "WITH ns AS (INSERT INTO tasker.namespaces (name) VALUES ('ns') RETURNING namespace_uuid)
         INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template)
         SELECT namespace_uuid, 't', '1', '{}' FROM ns RETURNING named_task_uuid",
    )
    .fetch_one(&db.pool)
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

/// A connection whose calls of PL/pgSQL functions the statistics system counts.
async fn counted_connection(db: &TestDatabase) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET track_functions = 'pl'")
        .execute(&mut *conn)
        .await
        .unwrap();
    conn
}

/// Waits (up to 20 s) until no other session of this database holds a snapshot, so that rows
/// `conn` deleted are dead to every reader.
async fn no_older_snapshots(db: &TestDatabase, conn: &mut sqlx::PgConnection) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let holding: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND backend_xmin IS NOT NULL",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        if holding == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{holding} sessions of {} kept a snapshot for 20 s",
            db.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Entries read so far from the tasker indexes named, once `ready` (an SQL condition on the
/// statistics views) holds, so that every earlier statement's counts are in.
async fn index_reads(db: &TestDatabase, indexes: &[&str], ready: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (reads, arrived): (i64, bool) = sqlx::query_as(&format!(
            "SELECT (SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes
                      WHERE schemaname = 'tasker' AND indexrelname = ANY ($1)),
                    coalesce({ready}, false)"
        ))
        .bind(indexes)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if arrived {
            return reads;
        }
        assert!(Instant::now() < deadline, "the statistics never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Heap pages of `schema.table` read into shared buffers or found there so far, by a
/// database of one connection: it goes idle between statements, so its counts are in.
async fn heap_pages_read(db: &TestDatabase, schema: &str, table: &str) -> i64 {
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT heap_blks_read + heap_blks_hit FROM pg_statio_user_tables
          WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// The condition that `calls` calls of tasker.`function` on a counted connection are in.
fn calls_of(function: &str, calls: i64) -> String {
    format!(
        "(SELECT calls FROM pg_stat_user_functions
           WHERE schemaname = 'tasker' AND funcname = '{function}') >= {calls}
         OR {calls} = 0"
    )
}

/// The condition that at least `steps` step rows inserted and `updates` task rows updated
/// are counted.
fn stored(steps: i64, updates: i64) -> String {
    format!(
        "(SELECT n_tup_ins FROM pg_stat_user_tables
           WHERE schemaname = 'tasker' AND relname = 'workflow_steps') >= {steps}
         AND (SELECT n_tup_upd FROM pg_stat_user_tables
               WHERE schemaname = 'tasker' AND relname = 'tasks') >= {updates}"
    )
}

/// Every index of the steps and of the audit log.
const STEP_INDEXES: &[&str] = &[
    "workflow_steps_pkey",
    "workflow_steps_task_uuid_name_key",
    "workflow_steps_failed_idx",
    "workflow_steps_retry_idx",
    "step_result_audit_log_pkey",
    "step_result_audit_log_task_idx",
    "step_result_audit_log_recorded_idx",
];
/// The indexes the expired-claims sweep reads: the claims' rows and the steps' key.
const CLAIMS: &[&str] = &[
    "step_claims_pkey",
    "step_claims_check_idx",
    "workflow_steps_pkey",
];
/// The indexes of failed and retrying steps.
const FAILURES: &[&str] = &["workflow_steps_failed_idx", "workflow_steps_retry_idx"];

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

/// A task with `steps` steps in `state`, attempt 1, recorded by `recorded_by` (or none), with
/// an error when failed or retrying.
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
           recorded_by, completed_at, last_error, parent_count, pending_parents)
         SELECT t.task_uuid, 'noop_' || i, i, 'Examples::Noop', 3, true, 'none', 0, 0,
                $3, 1, $4, CASE WHEN $4 IS NOT NULL THEN now() END,
                CASE WHEN $3 IN ('error', 'waiting_for_retry') THEN '{}'::jsonb END, 0, 0
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

/// A plan made while `tasks` held a page joined each finished task to tasks_active_idx
/// (whose predicate its state matched) and filtered on the key: active tasks, and old
/// versions of tasks not yet vacuumed, read again for each task a recording finished, for as
/// long as the connection lived (657 entries a finished task in one bench run).
#[tokio::test]
async fn finishing_a_task_reads_no_other_active_task() {
    let db = TestDatabase::new().await;
    let named_task = named_task(&db).await;
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
    let before = index_reads(&db, &["tasks_active_idx"], &stored(30_010, 1)).await;
    record_all(&mut recorder, last).await;
    flush_stats(&mut recorder).await;
    let after = index_reads(&db, &["tasks_active_idx"], &stored(30_010, 2)).await;
    assert!(
        after - before < 100,
        "finishing one task read {} entries of tasks_active_idx",
        after - before
    );
}

/// Before, the check of steps it could not renew went through the view step_result_audits,
/// whose generic plan read every step the worker had ever recorded: each heartbeat that
/// found a step being recorded (common under load) paid for the whole history kept.
#[tokio::test]
async fn a_renewal_judges_lost_steps_without_reading_the_history() {
    let db = TestDatabase::new().await;
    let named_task = named_task(&db).await;
    let mut conn = counted_connection(&db).await;
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
    flush_stats(&mut conn).await;
    let before = index_reads(&db, STEP_INDEXES, &calls_of("renew_leases", 0)).await;

    let mut lost: Vec<Uuid> = sqlx::query_scalar("SELECT * FROM tasker.renew_leases($1, 'w', 60)")
        .bind(vec![theirs, released, failed, recorded])
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    flush_stats(&mut conn).await;
    let after = index_reads(&db, STEP_INDEXES, &calls_of("renew_leases", 1)).await;

    lost.sort();
    let mut expected = vec![theirs, released];
    expected.sort();
    assert_eq!(lost, expected, "lost: another's and the released step only");
    assert!(
        after - before < 100,
        "judging four steps read {} entries of the steps' and the audit log's indexes",
        after - before
    );
}

/// Before, both of finalize_task's looks at a task's failures (is a step waiting for a
/// retry; which steps failed for good) were planned as a scan of the whole partial index on
/// that state ANDed with the task's steps: every step kept in error, or waiting for a
/// retry in any task, read again for each task finalized.
#[tokio::test]
async fn finalizing_reads_only_the_tasks_own_failures() {
    let db = TestDatabase::new().await;
    let named_task = named_task(&db).await;
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

    let mut conn = counted_connection(&db).await;
    let before = index_reads(&db, FAILURES, &calls_of("finalize_task", 0)).await;
    let mut outcomes = Vec::new();
    for t in [retrying, failed] {
        let outcome: String = sqlx::query_scalar("SELECT tasker.finalize_task($1, 'test')")
            .bind(t)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        outcomes.push(outcome);
    }
    flush_stats(&mut conn).await;
    let after = index_reads(&db, FAILURES, &calls_of("finalize_task", 2)).await;

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

/// The sweep for expired leases finds claims through their rows in tasker.step_claims: a
/// row whose steps were all recorded is read and deleted; a row with a step still held waits
/// for that step's lease. A deleted row's index entry is read once more, by the next sweep,
/// which marks it dead; after that the rows of finished claims cost nothing. (Before, the
/// sweep read an index of claimed steps where every claim left an entry until a vacuum.)
#[tokio::test]
async fn the_expired_claims_sweep_leaves_finished_claims_behind() {
    let db = TestDatabase::new().await;
    let named_task = named_task(&db).await;
    let mut conn = counted_connection(&db).await;
    sqlx::query("SELECT pgmq.create('worker_ns_queue')")
        .execute(&mut *conn)
        .await
        .unwrap();
    // 2,000 claims of ten steps each, their checks due, their steps recorded since.
    let finished = running_tasks(&mut conn, named_task, 2000).await;
    let note = "SELECT tasker.note_claims('w', array_agg(s.step_uuid), now() - interval '1 second')
                  FROM tasker.workflow_steps s WHERE s.task_uuid = ANY ($1)
                 GROUP BY s.task_uuid";
    sqlx::query(note)
        .bind(&finished)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tasker.workflow_steps
            SET state = 'complete', claim_owner = NULL, lease_expires_at = NULL,
                recorded_by = 'w', completed_at = now()
          WHERE task_uuid = ANY ($1)",
    )
    .bind(&finished)
    .execute(&mut *conn)
    .await
    .unwrap();
    // One claim of ten steps still held: one lease ran out, nine run for an hour.
    let running = running_tasks(&mut conn, named_task, 1).await;
    sqlx::query(note)
        .bind(&running)
        .execute(&mut *conn)
        .await
        .unwrap();
    let expired: Uuid = sqlx::query_scalar(
        "UPDATE tasker.workflow_steps SET lease_expires_at = now() - interval '1 minute'
          WHERE task_uuid = $1 AND name = 'noop_0' RETURNING step_uuid",
    )
    .bind(running[0])
    .fetch_one(&mut *conn)
    .await
    .unwrap();

    let sweep = "SELECT released FROM tasker.release_expired_claims('test', 100)";
    let first: i32 = sqlx::query_scalar(sweep)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let (rows, check_in): (i64, f64) = sqlx::query_as(
        "SELECT count(*), coalesce(extract(epoch FROM max(check_at) - now()), 0)::float8
           FROM tasker.step_claims",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    // The second sweep marks the deleted rows' entries dead only if no snapshot in this
    // database is older than their deletion. Once in CI the third sweep read them all again:
    // another session of the database (a pooled connection's statement, on a loaded machine)
    // is the one thing that could have kept them.
    no_older_snapshots(&db, &mut conn).await;
    let second: i32 = sqlx::query_scalar(sweep)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    flush_stats(&mut conn).await;
    let before = index_reads(&db, CLAIMS, &calls_of("release_expired_claims", 2)).await;
    let third: i32 = sqlx::query_scalar(sweep)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    flush_stats(&mut conn).await;
    let after = index_reads(&db, CLAIMS, &calls_of("release_expired_claims", 3)).await;

    assert_eq!(
        (first, second, third),
        (1, 0, 0),
        "the expired claim is released once"
    );
    let state: String =
        sqlx::query_scalar("SELECT state FROM tasker.workflow_steps WHERE step_uuid = $1")
            .bind(expired)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(state, "enqueued");
    assert_eq!(
        rows, 1,
        "only the claim with steps still held keeps its row"
    );
    assert!(
        check_in > 3000.0,
        "the held claim is looked at again when its steps' leases run out, not {check_in} s from now"
    );
    assert!(
        after - before < 100,
        "a third sweep read {} index entries of the claims and the steps",
        after - before
    );
}

/// The waiting-steps gauge reads each worker queue by its key. A queue's table keeps every
/// page a backlog grew it to (queue vacuums never truncate); read whole, an emptied queue
/// cost the gauge one read of each page at every refresh (before: PGMQ's index on vt, which
/// the function meant to walk, is dropped by prepare_queue_table).
#[tokio::test]
async fn the_waiting_steps_gauge_reads_no_page_of_an_emptied_queue() {
    let db = TestDatabase::with_max_connections(1).await;
    for statement in [
        "SELECT pgmq.create('worker_ns_queue')",
        "SELECT tasker.prepare_queue_table('worker_ns_queue')",
        "INSERT INTO pgmq.q_worker_ns_queue (vt, message)
         SELECT now(), jsonb_build_object('step_uuid', gen_random_uuid())
           FROM generate_series(1, 20000)",
        "DELETE FROM pgmq.q_worker_ns_queue",
        "VACUUM (TRUNCATE false) pgmq.q_worker_ns_queue",
    ] {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }
    let pages: i64 = sqlx::query_scalar(
        "SELECT pg_relation_size('pgmq.q_worker_ns_queue') / current_setting('block_size')::bigint",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(pages > 100, "the backlog left {pages} pages");
    let before = heap_pages_read(&db, "pgmq", "q_worker_ns_queue").await;
    let waiting: i64 = sqlx::query_scalar("SELECT waiting FROM tasker.waiting_steps()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let after = heap_pages_read(&db, "pgmq", "q_worker_ns_queue").await;
    assert_eq!(waiting, 0);
    assert!(
        after - before < 10,
        "the gauge read {} of the emptied queue's {pages} pages",
        after - before
    );
}

/// The expired-claims sweep finds the due claim rows through `step_claims_check_idx`, so a
/// sweep reads none of the rows not yet due (every claim being worked on, each a few seconds
/// from its check). Compared with `clock_timestamp()`, which no index condition can take,
/// it read the whole table, and every claim row not yet vacuumed, each time.
#[tokio::test]
async fn the_expired_claims_sweep_reads_no_claim_that_is_not_due() {
    let db = TestDatabase::with_max_connections(1).await;
    sqlx::query(
        "INSERT INTO tasker.step_claims (worker_id, steps, check_at)
         SELECT 'w', ARRAY[gen_random_uuid()], now() + interval '1 hour'
           FROM generate_series(1, 20000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let pages: i64 = sqlx::query_scalar(
        "SELECT pg_relation_size('tasker.step_claims') / current_setting('block_size')::bigint",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(pages > 100, "20,000 claims took {pages} pages");
    let before = heap_pages_read(&db, "tasker", "step_claims").await;
    let released: i32 =
        sqlx::query_scalar("SELECT released FROM tasker.release_expired_claims('test', 100)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let after = heap_pages_read(&db, "tasker", "step_claims").await;
    assert_eq!(released, 0);
    assert!(
        after - before < 10,
        "the sweep read {} of the claims' {pages} pages",
        after - before
    );
}

/// Every update a no-op step's life makes to its row (claimed, recorded; a child readied and
/// claimed by its parent's recording, then recorded) is heap-only: no index of the steps
/// names a column those updates change, so none gets an entry. An index added on the state,
/// the claim or the audit columns fails this.
#[tokio::test]
async fn a_steps_claims_and_recordings_are_heap_only_updates() {
    let db = TestDatabase::new().await;
    let named_task = named_task(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SELECT pgmq.create('worker_ns_queue')")
        .execute(&mut *conn)
        .await
        .unwrap();
    let (root, child): (Uuid, Uuid) = sqlx::query_as(
        "WITH t AS (
           INSERT INTO tasker.tasks (named_task_uuid, state)
           VALUES ($1, 'steps_in_process') RETURNING task_uuid
         ), s AS (
           INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
             max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, state,
             parent_count, pending_parents)
           SELECT t.task_uuid, x.name, x.i, 'Examples::Noop', 3, true, 'none', 0, 0, x.state,
                  x.parents, x.parents
             FROM t CROSS JOIN (VALUES ('a', 0, 'enqueued', 0), ('b', 1, 'pending', 1))
                               AS x(name, i, state, parents)
           RETURNING step_uuid, task_uuid, name
         ), e AS (
           INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
           SELECT a.task_uuid, a.step_uuid, b.step_uuid
             FROM s a JOIN s b ON a.name = 'a' AND b.name = 'b'
         )
         SELECT (SELECT step_uuid FROM s WHERE name = 'a'), (SELECT step_uuid FROM s WHERE name = 'b')",
    )
    .bind(named_task)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    flush_stats(&mut conn).await;
    let updates = "(SELECT n_tup_upd FROM pg_stat_user_tables
                     WHERE schemaname = 'tasker' AND relname = 'workflow_steps')";
    let counts = format!(
        "SELECT {updates}, (SELECT n_tup_hot_upd FROM pg_stat_user_tables
                             WHERE schemaname = 'tasker' AND relname = 'workflow_steps')"
    );
    let (updated_before, hot_before): (i64, i64) =
        sqlx::query_as(&counts).fetch_one(&mut *conn).await.unwrap();

    let claimed: String =
        sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps(ARRAY[$1::uuid], 'w', 60)")
            .bind(root)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(claimed, "claimed");
    let result = |step: Uuid| {
        serde_json::json!([{"step_uuid": step, "attempt": 1, "success": true,
                            "result": {}, "execution_ms": 0}])
    };
    let some = |s: &str| Some(s.to_string());
    let outcomes: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT c.outcome, (c.claim).outcome AS claim, c.task_state
           FROM tasker.complete_steps('w', $1, 0, 0, ARRAY['ns'], 1, 60) AS c ORDER BY 1",
    )
    .bind(result(root))
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        outcomes,
        [
            ("completed".to_string(), None, some("steps_in_process")),
            ("enqueued".to_string(), some("claimed"), None)
        ],
        "the child is readied and claimed by its parent's recording; the task goes on"
    );
    let finished: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT outcome, task_state FROM tasker.complete_steps('w', $1, 0, 0)")
            .bind(result(child))
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert_eq!(
        finished,
        [("completed".to_string(), some("complete"))],
        "the last step's recording reports the task it finished"
    );
    flush_stats(&mut conn).await;
    index_reads(&db, &[], &format!("{updates} >= {updated_before} + 4")).await;
    let (updated, hot): (i64, i64) = sqlx::query_as(&counts).fetch_one(&mut *conn).await.unwrap();

    assert_eq!(
        updated - updated_before,
        4,
        "claim, recording, readying, recording"
    );
    assert_eq!(
        hot - hot_before,
        updated - updated_before,
        "every update of a step is heap-only"
    );
    let (claims, recorded): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasker.step_claims),
                (SELECT sum(completed) FROM tasker.step_recordings)",
    )
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        (claims, recorded),
        (2, 2),
        "both claims noted, both completions counted"
    );
}

/// Steps had a foreign key to their task, and edges to their task and steps: Postgres
/// checked each inserted row with an executor of its own that read the referenced key and
/// locked that row (for the steps, a twentieth of the server's CPU in a no-op run). Their
/// rows are written only by the functions that create or hold their task, so a chain of a
/// hundred steps and its edges is inserted without reading a task's or a step's key.
#[tokio::test]
async fn inserting_steps_and_edges_checks_no_key_per_row() {
    let db = TestDatabase::new().await;
    let named_task = named_task(&db).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let keys = ["tasks_pkey", "workflow_steps_pkey"];
    let before = index_reads(&db, &keys, "true").await;
    let chain = steps(&mut conn, named_task, 100, "pending", None).await;
    let edges = sqlx::query(
        "INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid)
         SELECT s.task_uuid, u.from_step, u.to_step
           FROM unnest($1::uuid[], $2::uuid[]) AS u(from_step, to_step)
           JOIN tasker.workflow_steps s ON s.step_uuid = u.to_step AND s.step_uuid = ANY ($2)",
    )
    .bind(&chain[..99])
    .bind(&chain[1..])
    .execute(&mut *conn)
    .await
    .unwrap();
    assert_eq!(edges.rows_affected(), 99);
    flush_stats(&mut conn).await;
    let edges_in = "(SELECT n_tup_ins FROM pg_stat_user_tables
                      WHERE schemaname = 'tasker' AND relname = 'workflow_step_edges') >= 99";
    let after = index_reads(&db, &keys, &format!("{} AND {edges_in}", stored(100, 0))).await;
    // The edges' statement reads its 99 steps by key once; a check per row read 100 task
    // keys for the steps and 297 keys for the edges.
    assert!(
        after - before <= 100,
        "{} key entries read for 100 steps and 99 edges",
        after - before
    );
}
