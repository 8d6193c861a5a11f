//! The worker's one-transaction completion (`tasker.complete_steps`): batches that mix
//! kept and stale claims, parents completing together, failures next to successes, and the
//! append-only transition log it writes; task creation that starts the task in the same
//! statement; and which transactions wait for the commit flush.

use serde_json::{json, Value};
use sqlx::Row;
use std::time::Duration;
use tasker_shared::claim::StepClaim;
use tasker_shared::queue::{worker_queue, QueueName};
use tasker_tests::Harness;
use tasker_worker::claim_statement;
use uuid::Uuid;

/// A harness whose orchestrator is stopped: the test plays the worker by hand.
async fn quiet() -> Harness {
    let mut h = Harness::orchestration_only(&[]).await;
    h.orchestrator
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    h
}

fn success(step: Uuid, attempt: i32, result: Value) -> Value {
    json!({"step_uuid": step, "attempt": attempt, "success": true, "result": result,
           "error": null, "execution_ms": 1, "metadata": {}})
}

/// A retryable handler failure.
fn flaky(step: Uuid, attempt: i32) -> Value {
    json!({"step_uuid": step, "attempt": attempt, "success": false, "result": null,
        "error": {"message": "flaky", "error_type": "handler_error", "retryable": true},
        "execution_ms": 1, "metadata": {}})
}

async fn claim(h: &Harness, steps: &[Uuid], worker: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps($1, $2, 60)")
        .bind(steps)
        .bind(worker)
        .fetch_all(&h.db.pool)
        .await
        .unwrap()
}

async fn complete(h: &Harness, worker: &str, results: Vec<Value>) -> Vec<(Uuid, String)> {
    let mut rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT step_uuid, outcome FROM tasker.complete_steps($1, $2, 0, 60000)")
            .bind(worker)
            .bind(Value::Array(results))
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    rows.sort();
    rows
}

/// The registered `linear_math` template, for creating its tasks by SQL.
async fn linear_math(h: &Harness) -> Uuid {
    sqlx::query_scalar("SELECT named_task_uuid FROM tasker.named_tasks WHERE name = 'linear_math'")
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

async fn step_id(h: &Harness, task: Uuid, name: &str) -> Uuid {
    h.steps(task)
        .await
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
        .step_uuid
}

async fn state_of(h: &Harness, step: Uuid) -> (String, Option<String>, i64) {
    sqlx::query_as(
        "SELECT s.state, s.claim_owner,
                (SELECT count(*) FROM tasker.step_result_audits a WHERE a.step_uuid = s.step_uuid)
           FROM tasker.workflow_steps s WHERE s.step_uuid = $1",
    )
    .bind(step)
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

async fn task_state(h: &Harness, task: Uuid) -> String {
    sqlx::query_scalar("SELECT state FROM tasker.tasks WHERE task_uuid = $1")
        .bind(task)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

async fn messages_for(h: &Harness, queue: &QueueName, step: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM pgmq.q_{} WHERE message->>'step_uuid' = $1",
        queue.as_str()
    ))
    .bind(step.to_string())
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_a_stale_claim_completes_the_rest_and_refuses_it() {
    let h = quiet().await;
    let queue = worker_queue("linear_workflow").unwrap();
    let mut firsts = Vec::new();
    for value in [1, 2] {
        let task = h
            .create("linear_workflow", "linear_math", json!({"value": value}))
            .await;
        firsts.push((task, step_id(&h, task, "add_two").await));
    }
    let (kept, lost) = (firsts[0].1, firsts[1].1);
    assert_eq!(claim(&h, &[kept, lost], "w1").await, ["claimed", "claimed"]);
    // w1's lease on one step expires and w2 takes it over.
    sqlx::query("UPDATE tasker.workflow_steps SET lease_expires_at = now() - interval '1 second' WHERE step_uuid = $1")
        .bind(lost)
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(claim(&h, &[lost], "w2").await, ["claimed"]);

    let mut expected = vec![(kept, "completed".to_string()), (lost, "refused".into())];
    expected.sort();
    assert_eq!(
        complete(
            &h,
            "w1",
            vec![success(kept, 1, json!(2)), success(lost, 1, json!(4))]
        )
        .await,
        expected
    );
    assert_eq!(state_of(&h, kept).await, ("complete".into(), None, 1));
    assert_eq!(
        state_of(&h, lost).await,
        ("in_progress".into(), Some("w2".into()), 0),
        "the stale result changed nothing"
    );
    // The kept step's child is enqueued in the same transaction, with its message.
    let child = step_id(&h, firsts[0].0, "triple").await;
    assert_eq!(state_of(&h, child).await.0, "enqueued");
    assert_eq!(messages_for(&h, &queue, child).await, 1);
    let untouched = step_id(&h, firsts[1].0, "triple").await;
    assert_eq!(state_of(&h, untouched).await.0, "pending");

    // The kept step went straight from in_progress to complete, by the worker.
    let log: Vec<(Option<String>, String, String, bool)> = sqlx::query_as(
        "SELECT from_state, to_state, actor, most_recent FROM tasker.workflow_step_transitions
          WHERE step_uuid = $1 ORDER BY sort_key",
    )
    .bind(kept)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let last = log.last().unwrap();
    assert_eq!(
        (last.0.as_deref(), last.1.as_str(), last.2.as_str(), last.3),
        (Some("in_progress"), "complete", "w1", true)
    );
    assert_eq!(log.iter().filter(|t| t.3).count(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_completing_in_one_batch_enqueue_their_child_once() {
    let h = quiet().await;
    let queue = worker_queue("diamond_workflow").unwrap();
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let start = step_id(&h, task, "start").await;
    assert_eq!(claim(&h, &[start], "w1").await, ["claimed"]);
    complete(&h, "w1", vec![success(start, 1, json!(9))]).await;
    let (left, right, join) = (
        step_id(&h, task, "left").await,
        step_id(&h, task, "right").await,
        step_id(&h, task, "join").await,
    );
    assert_eq!(claim(&h, &[left, right], "w1").await.len(), 2);
    // Both parents of the join complete in the same batch, each listed twice.
    let results = vec![
        success(left, 1, json!(81)),
        success(right, 1, json!(81)),
        success(left, 1, json!(81)),
        success(right, 1, json!(81)),
    ];
    let rows = complete(&h, "w1", results).await;
    assert_eq!(rows.len(), 2, "one row per step: {rows:?}");
    assert!(rows.iter().all(|(_, outcome)| outcome == "completed"));
    assert_eq!(state_of(&h, join).await.0, "enqueued");
    assert_eq!(messages_for(&h, &queue, join).await, 1);
    let enqueued: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions WHERE step_uuid = $1 AND to_state = 'enqueued'",
    )
    .bind(join)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(enqueued, 1);
    for parent in [left, right] {
        assert_eq!(state_of(&h, parent).await.2, 1, "one audit row each");
    }

    // The join's result finishes the task in the same transaction.
    assert_eq!(claim(&h, &[join], "w1").await, ["claimed"]);
    assert_eq!(
        complete(&h, "w1", vec![success(join, 1, json!(13122))]).await,
        [(join, "completed".to_string())]
    );
    assert_eq!(task_state(&h, task).await, "complete");
    // The same result again is refused: the claim is gone.
    assert_eq!(
        complete(&h, "w1", vec![success(join, 1, json!(13122))]).await,
        [(join, "refused".to_string())]
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_and_a_success_of_one_task_in_one_batch() {
    let h = quiet().await;
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let start = step_id(&h, task, "start").await;
    claim(&h, &[start], "w1").await;
    complete(&h, "w1", vec![success(start, 1, json!(9))]).await;
    let (left, right, join) = (
        step_id(&h, task, "left").await,
        step_id(&h, task, "right").await,
        step_id(&h, task, "join").await,
    );
    claim(&h, &[left, right], "w1").await;
    let failure = flaky(right, 1);
    let mut expected = vec![
        (left, "completed".to_string()),
        (right, "retry_scheduled".into()),
    ];
    expected.sort();
    assert_eq!(
        complete(&h, "w1", vec![success(left, 1, json!(81)), failure]).await,
        expected
    );
    assert_eq!(state_of(&h, left).await.0, "complete");
    assert_eq!(state_of(&h, right).await.0, "waiting_for_retry");
    assert_eq!(state_of(&h, join).await.0, "pending", "one parent is left");
    let (task_state, pending): (String, i32) = sqlx::query_as(
        "SELECT t.state, s.pending_parents FROM tasker.tasks t
           JOIN tasker.workflow_steps s ON s.task_uuid = t.task_uuid
          WHERE t.task_uuid = $1 AND s.step_uuid = $2",
    )
    .bind(task)
    .bind(join)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (task_state.as_str(), pending),
        ("waiting_for_retry", 1),
        "the task waits for the retry; the join still counts one parent"
    );
    h.shutdown().await;
}

/// What a recording writes for a success: the step's row, its audit row and its last log
/// row, and the child it readies.
type Recorded = (
    (
        String,
        Option<Value>,
        Option<Value>,
        Option<String>,
        bool,
        bool,
        i32,
    ),
    (i32, String, bool, Option<Value>, Option<Value>, i64, Value),
    (Option<String>, String, i32, String, Value),
    String,
);

async fn recorded(h: &Harness, task: Uuid) -> Recorded {
    let step = step_id(h, task, "add_two").await;
    let row = sqlx::query_as(
        "SELECT state, results, last_error, claim_owner, lease_expires_at IS NULL,
                completed_at IS NOT NULL, attempts
           FROM tasker.workflow_steps WHERE step_uuid = $1",
    )
    .bind(step)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    let audit = sqlx::query_as(
        "SELECT attempt, worker_id, success, result, error, execution_time_ms, metadata
           FROM tasker.step_result_audits WHERE step_uuid = $1",
    )
    .bind(step)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    let log = sqlx::query_as(
        "SELECT from_state, to_state, sort_key, actor, metadata
           FROM tasker.workflow_step_transitions WHERE step_uuid = $1
          ORDER BY sort_key DESC LIMIT 1",
    )
    .bind(step)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    let child = state_of(h, step_id(h, task, "triple").await).await.0;
    (row, audit, log, child)
}

/// A batch of successes without outcomes is recorded by complete_steps' own statement; a
/// batch with anything else (here a failure) by store_step_results. Both write the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_success_is_recorded_as_the_general_path_records_it() {
    let h = quiet().await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(
            h.create("linear_workflow", "linear_math", json!({"value": 1}))
                .await,
        );
    }
    let mut first = Vec::new();
    for t in &tasks {
        first.push(step_id(&h, *t, "add_two").await);
    }
    assert_eq!(claim(&h, &first, "w1").await, ["claimed"; 3]);
    let result = |step| {
        json!({"step_uuid": step, "attempt": 1, "success": true, "result": {"sum": 3},
               "error": null, "execution_ms": 7, "metadata": {"handler": "add_two"}})
    };
    assert_eq!(
        complete(&h, "w1", vec![result(first[0])]).await,
        [(first[0], "completed".to_string())]
    );
    let mut expected = vec![
        (first[1], "completed".to_string()),
        (first[2], "retry_scheduled".to_string()),
    ];
    expected.sort();
    assert_eq!(
        complete(&h, "w1", vec![result(first[1]), flaky(first[2], 1)]).await,
        expected
    );
    let plain = recorded(&h, tasks[0]).await;
    assert_eq!(plain, recorded(&h, tasks[1]).await);
    assert_eq!(plain.0 .0, "complete");
    assert_eq!(plain.0 .1, Some(json!({"sum": 3})));
    assert_eq!(plain.1 .6, json!({"handler": "add_two"}));
    assert_eq!(plain.2 .4, json!({"attempt": 1, "execution_time_ms": 7}));
    assert_eq!(plain.3, "enqueued");
    // A result for a claim this worker no longer holds is refused on the plain path too.
    assert_eq!(
        complete(&h, "w2", vec![result(first[2])]).await,
        [(first[2], "refused".to_string())]
    );
    h.shutdown().await;
}

/// A task's transitions: from, to, sort key, current, actor, metadata.
type TaskLog = Vec<(Option<String>, String, i32, bool, String, Value)>;

async fn task_log(h: &Harness, task: Uuid) -> TaskLog {
    sqlx::query_as(
        "SELECT from_state, to_state, sort_key, most_recent, actor, metadata
           FROM tasker.task_transitions WHERE task_uuid = $1 ORDER BY sort_key",
    )
    .bind(task)
    .fetch_all(&h.db.pool)
    .await
    .unwrap()
}

/// Runs a diamond task up to its join, which it leaves claimed by w1.
async fn up_to_the_join(h: &Harness) -> (Uuid, Uuid) {
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let start = step_id(h, task, "start").await;
    claim(h, &[start], "w1").await;
    complete(h, "w1", vec![success(start, 1, json!(9))]).await;
    let (left, right, join) = (
        step_id(h, task, "left").await,
        step_id(h, task, "right").await,
        step_id(h, task, "join").await,
    );
    claim(h, &[left, right], "w1").await;
    complete(
        h,
        "w1",
        vec![success(left, 1, json!(81)), success(right, 1, json!(81))],
    )
    .await;
    assert_eq!(claim(h, &[join], "w1").await, ["claimed"]);
    (task, join)
}

/// Tasks whose last steps complete in one batch complete together, each with the history
/// finalize_task writes; a task of the same batch with steps left is finalized as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_finished_in_one_batch_complete_together_with_their_history() {
    let h = quiet().await;
    let (first, first_join) = up_to_the_join(&h).await;
    let (second, second_join) = up_to_the_join(&h).await;
    let open = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let open_start = step_id(&h, open, "start").await;
    claim(&h, &[open_start], "w1").await;
    let rows = complete(
        &h,
        "w1",
        vec![
            success(first_join, 1, json!(13122)),
            success(second_join, 1, json!(13122)),
            success(open_start, 1, json!(9)),
        ],
    )
    .await;
    assert!(rows.iter().all(|(_, o)| o == "completed"), "{rows:?}");
    for task in [first, second] {
        assert_eq!(task_state(&h, task).await, "complete");
        let log = task_log(&h, task).await;
        let to: Vec<&str> = log.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(
            to,
            [
                "pending",
                "initializing",
                "enqueuing_steps",
                "steps_in_process",
                "complete"
            ]
        );
        assert_eq!(
            log.last().unwrap(),
            &(
                Some("steps_in_process".to_string()),
                "complete".to_string(),
                4,
                true,
                "w1".to_string(),
                json!({"execution_status": "all_complete"})
            )
        );
        assert_eq!(log.iter().filter(|t| t.3).count(), 1, "one current row");
        let completed: bool = sqlx::query_scalar(
            "SELECT completed_at IS NOT NULL AND completed_at >= created_at
               FROM tasker.tasks WHERE task_uuid = $1",
        )
        .bind(task)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
        assert!(completed);
    }
    assert_eq!(task_state(&h, open).await, "steps_in_process");
    for name in ["left", "right"] {
        assert_eq!(
            state_of(&h, step_id(&h, open, name).await).await.0,
            "enqueued"
        );
    }
    assert_eq!(
        task_log(&h, open).await.len(),
        4,
        "nothing to record for it"
    );
    h.shutdown().await;
}

async fn history(h: &Harness, step: Uuid) -> Vec<(Option<String>, String, i32, Value)> {
    sqlx::query_as(
        "SELECT from_state, to_state, sort_key, metadata FROM tasker.workflow_step_transitions
          WHERE step_uuid = $1 ORDER BY sort_key",
    )
    .bind(step)
    .fetch_all(&h.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_task_starts_in_its_creating_statement_with_its_whole_history() {
    let h = quiet().await;
    let queue = worker_queue("diamond_workflow").unwrap();
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let (start, join) = (
        step_id(&h, task, "start").await,
        step_id(&h, task, "join").await,
    );
    assert_eq!(state_of(&h, start).await.0, "enqueued");
    assert_eq!(messages_for(&h, &queue, start).await, 1);
    assert_eq!(
        history(&h, start).await,
        [
            (None, "pending".to_string(), 0, json!({})),
            (
                Some("pending".into()),
                "enqueued".into(),
                1,
                json!({"attempt": 1})
            )
        ]
    );
    assert_eq!(state_of(&h, join).await.0, "pending");
    assert_eq!(messages_for(&h, &queue, join).await, 0);
    assert_eq!(
        history(&h, join).await,
        [(None, "pending".to_string(), 0, json!({}))]
    );
    let task_log: Vec<(Option<String>, String, bool)> = sqlx::query_as(
        "SELECT from_state, to_state, most_recent FROM tasker.task_transitions
          WHERE task_uuid = $1 ORDER BY sort_key",
    )
    .bind(task)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let states: Vec<&str> = task_log.iter().map(|t| t.1.as_str()).collect();
    assert_eq!(
        states,
        [
            "pending",
            "initializing",
            "enqueuing_steps",
            "steps_in_process"
        ]
    );
    assert_eq!(
        task_log.iter().filter(|t| t.2).count(),
        1,
        "one current row"
    );
    assert_eq!(task_state(&h, task).await, "steps_in_process");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_task_deletes_its_steps_history_and_audits() {
    let h = Harness::with_rust_worker(&[]).await;
    let done = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let kept = h
        .create("diamond_workflow", "diamond_math", json!({"value": 4}))
        .await;
    for task in [done, kept] {
        assert_eq!(
            h.wait(task, Duration::from_secs(30)).await.state,
            "complete"
        );
    }
    let rows = |task: Uuid| {
        let pool = h.db.pool.clone();
        async move {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT (SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = $1),
                        (SELECT count(*) FROM tasker.step_result_audits WHERE task_uuid = $1)",
            )
            .bind(task)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        rows(done).await,
        (16, 4),
        "four transitions and a result per step"
    );
    sqlx::query("DELETE FROM tasker.tasks WHERE task_uuid = $1")
        .bind(done)
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(rows(done).await, (0, 0));
    assert_eq!(rows(kept).await, (16, 4), "another task's rows stay");
    h.shutdown().await;
}

/// Runs `statement` in a transaction and returns the synchronous_commit it commits with.
async fn commit_mode_after(
    h: &Harness,
    statement: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> String {
    let mut tx = h.db.pool.begin().await.unwrap();
    statement.execute(&mut *tx).await.unwrap();
    let mode = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    mode
}

/// Claims and queue reads do not wait for the WAL flush; creation and results do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_claims_and_reads_skip_the_commit_flush() {
    let h = quiet().await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    let first = step_id(&h, task, "add_two").await;
    assert_eq!(commit_mode_after(&h, sqlx::query("SELECT 1")).await, "on");
    let read =
        sqlx::query("SELECT * FROM tasker.read_messages('worker_linear_workflow_queue', 30, 10)");
    assert_eq!(commit_mode_after(&h, read).await, "off");
    let claim = sqlx::query("SELECT * FROM tasker.claim_steps($1, 'w1', 60)").bind([first]);
    assert_eq!(commit_mode_after(&h, claim).await, "off");
    let statement = claim_statement(&worker_queue("linear_workflow").unwrap());
    let read_and_claim = sqlx::query(&statement)
        .bind(10)
        .bind(30.0)
        .bind("w1")
        .bind(60);
    assert_eq!(commit_mode_after(&h, read_and_claim).await, "off");
    let complete = sqlx::query("SELECT * FROM tasker.complete_steps('w1', $1, 0, 60000)")
        .bind(Value::Array(vec![success(first, 1, json!(3))]));
    assert_eq!(
        commit_mode_after(&h, complete).await,
        "on",
        "a result's commit waits for the flush"
    );
    assert_eq!(state_of(&h, first).await.0, "complete");
    h.shutdown().await;
}

/// `tasker.create_task` with `p_hold_roots` enqueues a fixed DAG's roots without sending
/// their messages and returns them for its caller to insert; without it, it sends them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_holding_its_roots_returns_their_messages_instead_of_sending_them() {
    let h = quiet().await;
    let named = linear_math(&h).await;
    let create = |hold: bool| {
        sqlx::query_as::<_, (Uuid, bool, String, Option<Value>)>(
            "SELECT * FROM tasker.create_task('spec',
               ROW($1, '{\"value\": 1}', NULL, 'spec', ARRAY[
                 ROW('first', 'Noop', '{}', 3, true, 'exponential', 100, 1000, NULL, '[]',
                     '{}')::tasker.step_spec,
                 ROW('second', 'Noop', '{}', 3, true, 'exponential', 100, 1000, NULL, '[]',
                     '{first}')::tasker.step_spec])::tasker.task_spec,
               NULL, 100, $2)",
        )
        .bind(named)
        .bind(hold)
        .fetch_one(&h.db.pool)
    };
    let queue = worker_queue("linear_workflow").unwrap();
    let (held, created, state, messages) = create(true).await.unwrap();
    assert!(created);
    assert_eq!(state, "steps_in_process");
    let first = step_id(&h, held, "first").await;
    assert_eq!(state_of(&h, first).await.0, "enqueued");
    assert_eq!(
        messages,
        Some(
            json!([{"task_uuid": held, "step_uuid": first, "step_name": "first",
                     "namespace": "linear_workflow", "attempt": 1}])
        )
    );
    assert_eq!(
        messages_for(&h, &queue, first).await,
        0,
        "the caller sends it"
    );

    let (sent, _, _, messages) = create(false).await.unwrap();
    assert_eq!(messages, None);
    let first = step_id(&h, sent, "first").await;
    assert_eq!(messages_for(&h, &queue, first).await, 1);
    h.shutdown().await;
}

/// A creation asked for its rows (p_read) builds the task's and a started task's steps from
/// what it inserted: they must be what the views read back, field for field, for a claimed
/// root, a waiting child and the task; a taken key reads them; with p_read false or NULL
/// there are none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_returns_the_rows_the_views_read_back() {
    let h = quiet().await;
    let named = linear_math(&h).await;
    let create = |read: Option<bool>| {
        sqlx::query_as::<_, (Uuid, bool, Option<Value>, Option<Value>)>(
            "SELECT c.task_uuid, c.created, to_jsonb(c.task), to_jsonb(c.steps)
               FROM tasker.create_task('spec',
               ROW($1, '{\"value\": 1}', 'once', 'spec', ARRAY[
                 ROW('first', 'Noop', '{\"a\": 1}', 3, true, 'exponential', 100, 1000, 30,
                     '[]', '{}')::tasker.step_spec,
                 ROW('second', 'Noop', '{}', 3, true, 'exponential', 100, 1000, NULL, '[]',
                     '{first}')::tasker.step_spec])::tasker.task_spec,
               NULL, 100, true, 'w1', 1, 60, p_read => $2) AS c",
        )
        .bind(named)
        .bind(read)
        .fetch_one(&h.db.pool)
    };
    let read_back = |task: Uuid| {
        sqlx::query_as::<_, (Value, Value)>(
            "SELECT (SELECT to_jsonb(r) FROM tasker.task_rows r WHERE r.task_uuid = $1),
                    (SELECT to_jsonb(array_agg(s ORDER BY s.position, s.name))
                       FROM tasker.step_rows s WHERE s.task_uuid = $1)",
        )
        .bind(task)
        .fetch_one(&h.db.pool)
    };
    let (task, created, row, steps) = create(Some(true)).await.unwrap();
    assert!(created);
    let (task_view, steps_view) = read_back(task).await.unwrap();
    assert_eq!(row, Some(task_view.clone()));
    assert_eq!(steps, Some(steps_view.clone()));
    let states: Vec<&str> = steps_view
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["in_progress", "pending"],
        "a claimed root and a child"
    );

    let (again, created, row, steps) = create(Some(true)).await.unwrap();
    assert_eq!((again, created), (task, false), "the key was taken");
    assert_eq!((row, steps), (Some(task_view), Some(steps_view)));
    for read in [Some(false), None] {
        let (_, _, row, steps) = create(read).await.unwrap();
        assert_eq!((row, steps), (None, None), "p_read {read:?}");
    }
    h.shutdown().await;
}

/// Tasker's connections commit as `[database] synchronous_commit` says and never
/// JIT-compile: its statements are short, and compiling one costs far more than running it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasker_connections_commit_durably_and_never_jit_compile() {
    let h = quiet().await;
    let pool = tasker_shared::database::connect(&h.config.database)
        .await
        .unwrap();
    let (commit, jit): (String, String) =
        sqlx::query_as("SELECT current_setting('synchronous_commit'), current_setting('jit')")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((commit.as_str(), jit.as_str()), ("on", "off"));
    pool.close().await;
    h.shutdown().await;
}

/// A pooled connection the server dropped while it sat idle is replaced when next
/// acquired, not handed to a statement that would fail on it: connections idle for
/// `PING_IDLE_AFTER` are pinged first (those used more recently go out without the round
/// trip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_dropped_while_idle_is_replaced_before_use() {
    let h = quiet().await;
    let mut config = h.config.database.clone();
    config.max_connections = 1;
    config.min_connections = 1;
    let pool = tasker_shared::database::connect(&config).await.unwrap();
    let backend = || sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()").fetch_one(&pool);
    let first = backend().await.unwrap();
    let terminated: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(first)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(terminated);
    tokio::time::sleep(tasker_shared::database::PING_IDLE_AFTER + Duration::from_millis(200)).await;
    let second = backend()
        .await
        .expect("the dropped connection is replaced, not used");
    assert_ne!(first, second);
    pool.close().await;
    h.shutdown().await;
}

/// The enqueuer's safety net: an active task left unchanged with a ready step that nobody
/// enqueued gets it enqueued, whether the step carries parent counters or predates them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_enqueues_ready_steps_left_behind_and_leaves_busy_tasks_alone() {
    let h = quiet().await;
    let queue = worker_queue("diamond_workflow").unwrap();
    let busy = h
        .create("diamond_workflow", "diamond_math", json!({"value": 1}))
        .await;
    let mut lost = Vec::new();
    for (value, legacy) in [(2, false), (3, true)] {
        let task = h
            .create("diamond_workflow", "diamond_math", json!({"value": value}))
            .await;
        let start = step_id(&h, task, "start").await;
        sqlx::query(&format!(
            "DELETE FROM pgmq.q_{} WHERE message->>'step_uuid' = $1",
            queue.as_str()
        ))
        .bind(start.to_string())
        .execute(&h.db.pool)
        .await
        .unwrap();
        sqlx::query("UPDATE tasker.workflow_steps SET state = 'pending', enqueued_at = NULL WHERE step_uuid = $1")
            .bind(start)
            .execute(&h.db.pool)
            .await
            .unwrap();
        if legacy {
            sqlx::query("UPDATE tasker.workflow_steps SET parent_count = NULL, pending_parents = NULL WHERE task_uuid = $1")
                .bind(task)
                .execute(&h.db.pool)
                .await
                .unwrap();
        }
        lost.push((task, start));
    }
    sqlx::query("UPDATE tasker.tasks SET updated_at = now() - interval '1 hour'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    let enqueuer = tasker_orchestration::StepEnqueuer::new(
        h.db.pool.clone(),
        tasker_shared::queue::Notifier::spawn(h.db.pool.clone()),
        Duration::from_secs(1),
        100,
        "test".into(),
    );
    assert_eq!(
        enqueuer.sweep().await.unwrap(),
        2,
        "only the two tasks left behind"
    );
    for (_, start) in &lost {
        assert_eq!(state_of(&h, *start).await.0, "enqueued");
        assert_eq!(messages_for(&h, &queue, *start).await, 1);
    }
    let busy_start = step_id(&h, busy, "start").await;
    assert_eq!(
        messages_for(&h, &queue, busy_start).await,
        1,
        "nothing sent twice"
    );
    assert_eq!(enqueuer.sweep().await.unwrap(), 0);
    h.shutdown().await;
}

/// `complete_steps` as the worker calls it: each row with whether the transaction sent
/// worker messages.
async fn complete_flagged(h: &Harness, results: Vec<Value>) -> Vec<(String, bool)> {
    sqlx::query_as("SELECT outcome, enqueued FROM tasker.complete_steps('w1', $1, 0, 60000)")
        .bind(Value::Array(results))
        .fetch_all(&h.db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_says_whether_it_enqueued_new_steps() {
    let h = quiet().await;
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let start = step_id(&h, task, "start").await;
    claim(&h, &[start], "w1").await;
    let done = complete_flagged(&h, vec![success(start, 1, json!(9))]).await;
    assert_eq!(
        done,
        [("completed".to_string(), true)],
        "left and right enqueued"
    );
    let (left, right, join) = (
        step_id(&h, task, "left").await,
        step_id(&h, task, "right").await,
        step_id(&h, task, "join").await,
    );
    claim(&h, &[left, right], "w1").await;
    let done = complete_flagged(&h, vec![success(left, 1, json!(81))]).await;
    assert_eq!(
        done,
        [("completed".to_string(), false)],
        "the join waits for right"
    );
    assert_eq!(state_of(&h, join).await.0, "pending");
    assert_eq!(task_state(&h, task).await, "steps_in_process");
    let done = complete_flagged(&h, vec![success(right, 1, json!(81))]).await;
    assert_eq!(done, [("completed".to_string(), true)], "the join enqueued");
    claim(&h, &[join], "w1").await;
    let done = complete_flagged(&h, vec![success(join, 1, json!(13122))]).await;
    assert_eq!(
        done,
        [("completed".to_string(), false)],
        "the task is complete"
    );
    assert_eq!(task_state(&h, task).await, "complete");
    let refused = complete_flagged(&h, vec![success(join, 1, json!(13122))]).await;
    assert_eq!(refused, [("refused".to_string(), false)]);
    h.shutdown().await;
}

/// A completion skips finalizing a task that has steps running and nothing to decide, but
/// not one with a retry whose backoff is over: that retry is enqueued by the completion of
/// a sibling, while another sibling still runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sibling_completion_enqueues_a_retry_that_is_due() {
    let h = quiet().await;
    let task = h
        .create("sleep_workflow", "parallel_sleep", json!({}))
        .await;
    let (a, b, c) = (
        step_id(&h, task, "sleep_a").await,
        step_id(&h, task, "sleep_b").await,
        step_id(&h, task, "sleep_c").await,
    );
    claim(&h, &[a, b, c], "w1").await;
    let failure = flaky(b, 1);
    assert_eq!(
        complete_flagged(&h, vec![failure]).await,
        [("retry_scheduled".to_string(), false)]
    );
    assert_eq!(state_of(&h, b).await.0, "waiting_for_retry");
    sqlx::query("UPDATE tasker.workflow_steps SET next_retry_at = now() - interval '1 second' WHERE step_uuid = $1")
        .bind(b)
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(
        complete_flagged(&h, vec![success(a, 1, json!(null))]).await,
        [("completed".to_string(), true)]
    );
    assert_eq!(
        state_of(&h, b).await.0,
        "enqueued",
        "the due retry went out"
    );
    assert_eq!(state_of(&h, c).await.0, "in_progress");
    h.shutdown().await;
}

/// The worker's read-and-claim statement: one row per message, in message order; a message
/// naming no step comes back without one, messages naming the same step share its claim,
/// and a step another worker holds is reported busy with its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_statement_reads_and_claims_in_one_call() {
    let h = quiet().await;
    let queues = tasker_shared::queue::QueueClient::new(h.db.pool.clone()).await;
    let queue = worker_queue("linear_workflow").unwrap();
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    let first = step_id(&h, task, "add_two").await;
    let again = json!({"task_uuid": task, "step_uuid": first, "step_name": "add_two",
                       "namespace": "linear_workflow", "attempt": 1});
    queues.send(&queue, &again, &h.db.pool).await.unwrap();
    queues
        .send(&queue, &json!({"what": "not a step message"}), &h.db.pool)
        .await
        .unwrap();
    queues
        .send(&queue, &json!("just a string"), &h.db.pool)
        .await
        .unwrap();
    let statement = claim_statement(&queue);
    let call = |worker: &'static str| {
        sqlx::query(&statement)
            .bind(10)
            .bind(30.0)
            .bind(worker)
            .bind(60)
            .fetch_all(&h.db.pool)
    };
    let rows: Vec<(Option<Uuid>, Option<String>, Option<i32>)> = call("w1")
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let claim: Option<StepClaim> = r.get("claim");
            (
                r.get("step_uuid"),
                claim.as_ref().map(|c| c.outcome().to_string()),
                claim.and_then(StepClaim::into_claimed).map(|c| c.attempt),
            )
        })
        .collect();
    let claimed = (Some(first), Some("claimed".to_string()), Some(1));
    assert_eq!(
        rows,
        [
            claimed.clone(),
            claimed,
            (None, None, None),
            (None, None, None)
        ]
    );
    assert_eq!(state_of(&h, first).await.0, "in_progress");
    assert_eq!(
        messages_for(&h, &queue, first).await,
        0,
        "a claimed step's messages are deleted with the claim"
    );
    assert!(
        call("w2").await.unwrap().is_empty(),
        "what was read and not claimed stays hidden"
    );

    queues.send(&queue, &again, &h.db.pool).await.unwrap();
    let busy = call("w2").await.unwrap();
    match busy[0].get::<Option<StepClaim>, _>("claim") {
        Some(StepClaim::Busy { lease_expires_at }) => {
            assert!(lease_expires_at.is_some_and(|l| l > chrono::Utc::now()))
        }
        other => panic!("expected busy, got {other:?}"),
    }
    h.shutdown().await;
}

/// A step id shaped like a UUID but not hex makes the read's cast of all its ids fail, and
/// then each id is checked on its own: the malformed ones name no step (the worker sets
/// them aside), an id that is a UUID but not hyphenated too, and the rest are claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_step_id_leaves_the_rest_of_the_read_claimed() {
    let h = quiet().await;
    let queues = tasker_shared::queue::QueueClient::new(h.db.pool.clone()).await;
    let queue = worker_queue("linear_workflow").unwrap();
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    let first = step_id(&h, task, "add_two").await;
    for id in [
        "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz".to_string(),
        first.simple().to_string(),
    ] {
        let message = json!({"task_uuid": task, "step_uuid": id, "step_name": "add_two",
                             "namespace": "linear_workflow", "attempt": 1});
        queues.send(&queue, &message, &h.db.pool).await.unwrap();
    }
    let rows: Vec<(Option<Uuid>, Option<String>)> = sqlx::query(&claim_statement(&queue))
        .bind(10)
        .bind(30.0)
        .bind("w1")
        .bind(60)
        .fetch_all(&h.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let claim: Option<StepClaim> = r.get("claim");
            (
                r.get("step_uuid"),
                claim.as_ref().map(|c| c.outcome().to_string()),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (Some(first), Some("claimed".to_string())),
            (None, None),
            (None, None)
        ]
    );
    assert_eq!(state_of(&h, first).await.0, "in_progress");
    h.shutdown().await;
}

/// What a recording wrote for a diamond task's steps once `start` completed, without keys
/// and times: each step's row, its log and its worker messages, and the task's
/// transitions.
async fn after_the_start(h: &Harness, task: Uuid) -> Value {
    let queue = worker_queue("diamond_workflow").unwrap();
    let steps: Vec<Value> = sqlx::query_scalar(&format!(
        "SELECT jsonb_build_array(
                  s.name, s.state, s.pending_parents, s.attempts, s.enqueued_at IS NOT NULL,
                  s.next_retry_at IS NULL,
                  (SELECT coalesce(jsonb_agg(jsonb_build_array(l.from_state, l.to_state,
                                                               l.sort_key, l.actor, l.metadata)
                                             ORDER BY l.sort_key), '[]')
                     FROM tasker.workflow_step_transitions l
                    WHERE l.step_uuid = s.step_uuid),
                  (SELECT count(*) FROM {table} q
                    WHERE q.message = jsonb_build_object(
                            'task_uuid', s.task_uuid, 'step_uuid', s.step_uuid,
                            'step_name', s.name, 'namespace', 'diamond_workflow',
                            'attempt', s.attempts + 1)
                      AND q.vt <= clock_timestamp() AND q.read_ct = 0))
           FROM tasker.workflow_steps s WHERE s.task_uuid = $1 ORDER BY s.name",
        table = queue.table()
    ))
    .bind(task)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    json!({"steps": steps, "task": task_log(h, task).await, "state": task_state(h, task).await})
}

/// A recording that leaves children with no parent to wait for enqueues them itself (step
/// row, log row and message) exactly as finalizing the task did before (parents_done, then
/// finalize_task's enqueue_steps_of); and when the caller says it sends a namespace's
/// messages, it returns them instead of sending them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_enqueued_by_their_recording_are_what_finalizing_enqueued() {
    let h = quiet().await;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let task = h
            .create("diamond_workflow", "diamond_math", json!({"value": 3}))
            .await;
        let start = step_id(&h, task, "start").await;
        assert_eq!(claim(&h, &[start], "w1").await, ["claimed"]);
        tasks.push((task, start));
    }
    let result = |start| Value::Array(vec![success(start, 1, json!(9))]);

    // The path before: store the result, count the parents done, finalize the task.
    let (finalized, start) = tasks[0];
    let mut tx = h.db.pool.begin().await.unwrap();
    sqlx::query("SELECT * FROM tasker.store_step_results('w1', $1, false)")
        .bind(result(start))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT tasker.parents_done($1), tasker.finalize_task($2, 'w1')")
        .bind([start])
        .bind(finalized)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let expected = after_the_start(&h, finalized).await;
    assert_eq!(expected["state"], "steps_in_process");

    // The recording, sending the messages itself.
    let (recorded, start) = tasks[1];
    let rows = complete(&h, "w1", vec![success(start, 1, json!(9))]).await;
    assert_eq!(rows, [(start, "completed".to_string())]);
    assert_eq!(after_the_start(&h, recorded).await, expected);

    // The recording, handing the messages back: the caller inserts them.
    let (handed_back, start) = tasks[2];
    let rows: Vec<(Uuid, String, Option<String>, Option<Value>)> = sqlx::query_as(
        "WITH done AS MATERIALIZED (
           SELECT * FROM tasker.complete_steps('w1', $1, 0, 60000, ARRAY['diamond_workflow'])
         ), sent AS (
           INSERT INTO pgmq.q_worker_diamond_workflow_queue (vt, message)
           SELECT clock_timestamp(), d.message FROM done d WHERE d.outcome = 'enqueued'
         )
         SELECT step_uuid, outcome, namespace, message FROM done ORDER BY outcome, step_uuid",
    )
    .bind(result(start))
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let (left, right) = (
        step_id(&h, handed_back, "left").await,
        step_id(&h, handed_back, "right").await,
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!((rows[0].0, rows[0].1.as_str()), (start, "completed"));
    let mut children: Vec<Uuid> = rows[1..].iter().map(|r| r.0).collect();
    children.sort();
    let mut expected_children = vec![left, right];
    expected_children.sort();
    assert_eq!(children, expected_children);
    for (step, outcome, namespace, message) in &rows[1..] {
        assert_eq!(outcome, "enqueued");
        assert_eq!(namespace.as_deref(), Some("diamond_workflow"));
        let message = message.as_ref().expect("an enqueued child's message");
        assert_eq!(message["step_uuid"], json!(step));
        assert_eq!(message["task_uuid"], json!(handed_back));
    }
    assert_eq!(after_the_start(&h, handed_back).await, expected);
    h.shutdown().await;
}

/// A recording that may claim children for its worker claims up to as many as it is
/// allowed of those it readies, in the UPDATE that readies them, as a read of their messages
/// would have them claimed (the claim in claim_steps' shape); the others stay enqueued for
/// the queue. It commits waiting for the flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_claims_children_it_readies_for_its_worker() {
    let h = quiet().await;
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let start = step_id(&h, task, "start").await;
    assert_eq!(claim(&h, &[start], "w1").await, ["claimed"]);
    let recording = sqlx::query(
        "SELECT step_uuid, outcome, to_jsonb(claim) AS claim
           FROM tasker.complete_steps('w1', $1, 0, 60000, ARRAY['diamond_workflow'], 1, 45)",
    )
    .bind(Value::Array(vec![success(start, 1, json!(9))]));
    let mut tx = h.db.pool.begin().await.unwrap();
    let rows = recording.fetch_all(&mut *tx).await.unwrap();
    let mode: String = sqlx::query_scalar("SELECT current_setting('synchronous_commit')")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let recorded_by: String = sqlx::query_scalar("SELECT txid_current()::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(mode, "on", "a result's commit waits for the flush");

    let children: Vec<(Uuid, Option<Value>)> = rows
        .iter()
        .filter(|r| r.get::<String, _>("outcome") == "enqueued")
        .map(|r| (r.get("step_uuid"), r.get("claim")))
        .collect();
    assert_eq!(children.len(), 2, "left and right are ready");
    let claimed: Vec<&(Uuid, Option<Value>)> =
        children.iter().filter(|(_, c)| c.is_some()).collect();
    assert_eq!(claimed.len(), 1, "no more than allowed: {children:?}");
    let (taken, taken_claim) = claimed[0];
    let taken_claim = taken_claim.as_ref().unwrap();
    let (left, right) = (
        step_id(&h, task, "left").await,
        step_id(&h, task, "right").await,
    );
    assert_eq!(*taken, left.min(right), "the first in step order");
    let other = left.max(right);
    assert_eq!(taken_claim["outcome"], "claimed");
    assert_eq!(taken_claim["attempt"], 1);
    assert_eq!(taken_claim["task_uuid"], json!(task));
    assert_eq!(taken_claim["dependency_results"], json!({"start": 9}));
    assert_eq!(taken_claim["task_context"], json!({"value": 3}));
    assert_eq!(taken_claim["step_uuid"], json!(taken));
    assert_eq!(taken_claim["namespace"], "diamond_workflow");
    assert_eq!(taken_claim["task_name"], "diamond_math");
    assert_eq!(
        taken_claim["step_name"],
        if *taken == left { "left" } else { "right" }
    );
    assert_eq!(taken_claim["handler_callable"], "Examples::Math::Compute");
    let (lease, attempts): (chrono::DateTime<chrono::Utc>, i32) = sqlx::query_as(
        "SELECT lease_expires_at, attempts FROM tasker.workflow_steps WHERE step_uuid = $1",
    )
    .bind(taken)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1);
    let claimed_lease: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(taken_claim["lease_expires_at"].clone()).unwrap();
    assert_eq!(claimed_lease, lease, "the lease the row holds");

    let (state, owner, _) = state_of(&h, *taken).await;
    assert_eq!(
        (state.as_str(), owner.as_deref()),
        ("in_progress", Some("w1"))
    );
    assert_eq!(state_of(&h, other).await.0, "enqueued");
    // Both of the claimed child's transitions come from the recording's transaction.
    let log: Vec<(Option<String>, String, Value, String)> = sqlx::query_as(
        "SELECT l.from_state, l.to_state, l.metadata, s.xmin::text
           FROM tasker.workflow_step_transitions l JOIN tasker.workflow_steps s USING (step_uuid)
          WHERE l.step_uuid = $1 ORDER BY l.sort_key",
    )
    .bind(taken)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let expected: Vec<(Option<String>, String, Value, String)> = vec![
        (None, "pending".into(), json!({}), log[0].3.clone()),
        (
            Some("pending".into()),
            "enqueued".into(),
            json!({"attempt": 1}),
            recorded_by.clone(),
        ),
        (
            Some("enqueued".into()),
            "in_progress".into(),
            json!({"claimed_by_recording": true}),
            recorded_by,
        ),
    ];
    assert_eq!(log, expected);
    // Nothing was sent for either child: the caller sends their messages.
    let queue = worker_queue("diamond_workflow").unwrap();
    assert_eq!(messages_for(&h, &queue, *taken).await, 0);
    assert_eq!(messages_for(&h, &queue, other).await, 0);
    // Every field a queue read's claim carries.
    let read_claim: Value =
        sqlx::query_scalar("SELECT to_jsonb(c) FROM tasker.claim_steps($1, 'w2', 60) c")
            .bind([other])
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    let keys = |v: &Value| {
        v.as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
    };
    assert_eq!(keys(taken_claim), keys(&read_claim));
    // Without leave to claim, nothing is claimed (w2 claimed `other` above).
    let rows: Vec<(String, Option<Value>)> = sqlx::query_as(
        "SELECT outcome, to_jsonb(claim) FROM tasker.complete_steps('w2', $1, 0, 60000, ARRAY['diamond_workflow'])",
    )
    .bind(Value::Array(vec![success(other, 1, json!(81))]))
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        rows,
        [("completed".to_string(), None)],
        "the join still waits"
    );
    h.shutdown().await;
}

/// Name, state, owner and attempts of a step, and whether the task's creating transaction
/// wrote it.
type CreatedStep = (String, String, Option<String>, i32, bool);

/// A transition: from, to, metadata, actor, and whether the task's creating transaction
/// wrote it.
type CreatedTransition = (Option<String>, String, Value, Option<String>, bool);

/// A task's steps, in template order.
async fn roots_of(h: &Harness, task: Uuid) -> Vec<CreatedStep> {
    sqlx::query_as(
        "SELECT s.name, s.state, s.claim_owner, s.attempts, s.xmin = t.xmin
           FROM tasker.workflow_steps s JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
          WHERE s.task_uuid = $1 ORDER BY s.position",
    )
    .bind(task)
    .fetch_all(&h.db.pool)
    .await
    .unwrap()
}

/// Read count and whether it is hidden now, of a step's message.
async fn message_of(h: &Harness, queue: &QueueName, step: Uuid) -> (i32, bool) {
    sqlx::query_as(&format!(
        "SELECT read_ct, vt > clock_timestamp() + interval '10 seconds' FROM {}
          WHERE (message->>'step_uuid')::uuid = $1",
        queue.table()
    ))
    .bind(step)
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

/// A process that runs a worker and creates tasks for it (the Ruby client beside
/// `Worker.start`) hands that worker the roots it has room for, claimed in the creating
/// transaction with the history a claim writes and no queue message (a claimed step has
/// none); the worker runs them without reading its queue. Roots beyond its room, and every root of a task
/// created while it has none, are enqueued for whichever worker reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_claims_the_roots_its_local_worker_has_room_for() {
    use tasker_orchestration::{TaskInitializer, TaskRequest};
    use tasker_tests::toml_value::Value as Toml;
    use tasker_worker::ffi::FfiStepResult;
    use tasker_worker::Dispatch;

    // Woken only by notifications, so that no fallback read holds room of its own when the
    // tasks are created; its first read, of an empty queue, is given time to finish.
    let h = Harness::orchestration_only(&[
        ("worker.max_steps_in_flight", Toml::Integer(2)),
        (
            "worker.deployment_mode",
            Toml::String("event_driven".into()),
        ),
    ])
    .await;
    let worker = h.start_worker(Dispatch::Ffi).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ffi = worker.ffi.clone().expect("an FFI worker has a channel");
    let initializer =
        TaskInitializer::new(h.db.pool.clone(), h.config.backoff.clone()).with_local_claims();
    let request = TaskRequest {
        namespace: "sleep_workflow".into(),
        name: "parallel_sleep".into(),
        version: "1.0.0".into(),
        context: json!({"sleep_ms": 1}),
        idempotency_key: None,
        initiator: Some("test".into()),
        run_at: None,
    };
    let (created, _, steps) = initializer.create_and_read_task(&request).await.unwrap();
    let task = created.task_uuid;
    let me = Some(worker.worker_id.clone());
    let rows = roots_of(&h, task).await;
    let expected: Vec<CreatedStep> = vec![
        ("sleep_a".into(), "in_progress".into(), me.clone(), 1, true),
        ("sleep_b".into(), "in_progress".into(), me.clone(), 1, true),
        ("sleep_c".into(), "enqueued".into(), None, 0, true),
        ("sleep_d".into(), "enqueued".into(), None, 0, true),
    ];
    assert_eq!(
        rows, expected,
        "the first two roots, as many as the worker may hold"
    );
    let returned: Vec<&str> = steps.iter().map(|s| s.state.as_str()).collect();
    assert_eq!(
        returned,
        ["in_progress", "in_progress", "enqueued", "enqueued"]
    );

    let (a, c) = (
        step_id(&h, task, "sleep_a").await,
        step_id(&h, task, "sleep_c").await,
    );
    let log: Vec<CreatedTransition> = sqlx::query_as(
        "SELECT l.from_state, l.to_state, l.metadata, l.actor, s.xmin = t.xmin
           FROM tasker.workflow_step_transitions l
           JOIN tasker.workflow_steps s USING (step_uuid)
           JOIN tasker.tasks t ON t.task_uuid = s.task_uuid
          WHERE l.step_uuid = $1 ORDER BY l.sort_key",
    )
    .bind(a)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let initializer_actor = Some("task_initializer".to_string());
    assert_eq!(
        log,
        vec![
            (
                None,
                "pending".into(),
                json!({}),
                initializer_actor.clone(),
                true
            ),
            (
                Some("pending".into()),
                "enqueued".into(),
                json!({"attempt": 1}),
                initializer_actor,
                true
            ),
            (
                Some("enqueued".into()),
                "in_progress".into(),
                json!({}),
                me.clone(),
                true
            ),
        ]
    );
    let queue = worker_queue("sleep_workflow").unwrap();
    assert_eq!(
        messages_for(&h, &queue, a).await,
        0,
        "a claimed root has no message"
    );
    assert_eq!(message_of(&h, &queue, c).await, (0, false), "for the queue");

    // While the worker holds as many as it may, a new task's roots all go to the queue.
    let (second, _, _) = initializer.create_and_read_task(&request).await.unwrap();
    let second = second.task_uuid;
    assert!(roots_of(&h, second)
        .await
        .iter()
        .all(|r| r.1 == "enqueued" && r.2.is_none()));

    // The claimed roots are on the worker's channel with what their handlers need.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut polled = Vec::new();
    while polled.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "claimed roots never dispatched"
        );
        match ffi.try_poll() {
            Some(step) => polled.push(step),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    let mut names: Vec<&str> = polled
        .iter()
        .map(|p| p.context.step_name.as_str())
        .collect();
    names.sort();
    assert_eq!(names, ["sleep_a", "sleep_b"]);
    for p in &polled {
        assert_eq!(p.context.task_uuid, task);
        assert_eq!(p.context.attempt, 1);
        assert_eq!(p.context.handler_callable, "Examples::Sleep");
        assert_eq!(p.context.initialization, json!({"ms": 50}));
        assert_eq!(p.context.task_context, json!({"sleep_ms": 1}));
        assert!(p.context.dependency_results.is_empty());
    }
    // Answered, everything runs: the rest through queue reads as room is made.
    let mut pending = polled;
    let mut answered = 0;
    while answered < 8 {
        assert!(
            std::time::Instant::now() < deadline,
            "answered {answered} of 8 steps"
        );
        for p in pending.drain(..) {
            let ok = FfiStepResult {
                success: true,
                result: json!({"slept": p.context.step_name}),
                ..Default::default()
            };
            assert!(ffi.complete(p.event_id, ok));
            answered += 1;
        }
        match ffi.try_poll() {
            Some(p) => pending.push(p),
            None => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    for t in [task, second] {
        assert_eq!(h.wait(t, Duration::from_secs(20)).await.state, "complete");
    }
    assert_eq!(
        messages_for(&h, &queue, a).await,
        0,
        "deleted with its result"
    );
    worker.shutdown_within(Duration::from_secs(5)).await;
    h.shutdown().await;
}

/// A queue emptied and vacuumed has statistics that say it holds nothing, and a plan made
/// from them (a connection's generic plan) must still find the messages a read picked by
/// index when a burst arrives: the read updates them by `msg_id = ANY`, where a join was
/// planned the other way round and walked the whole queue for every read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_planned_from_an_emptied_queue_finds_its_messages_by_index() {
    let h = quiet().await;
    let queue = worker_queue("linear_workflow").unwrap();
    let table = queue.table();
    let fill = format!(
        "INSERT INTO {table} (vt, message)
         SELECT clock_timestamp(), jsonb_build_object('n', n) FROM generate_series(1, 2000) AS n"
    );
    sqlx::raw_sql(&fill).execute(&h.db.pool).await.unwrap();
    sqlx::raw_sql(&format!("DELETE FROM {table}"))
        .execute(&h.db.pool)
        .await
        .unwrap();
    // As the orchestrator's queue vacuum does it: the emptied pages stay.
    sqlx::raw_sql(&format!("VACUUM (TRUNCATE false) {table}"))
        .execute(&h.db.pool)
        .await
        .unwrap();
    sqlx::raw_sql(&fill).execute(&h.db.pool).await.unwrap();

    let mut conn = h.db.pool.acquire().await.unwrap();
    sqlx::raw_sql(&format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE read_and_claim AS {}",
        claim_statement(&queue)
    ))
    .execute(&mut *conn)
    .await
    .unwrap();
    let plan: Vec<String> = sqlx::query_scalar("EXPLAIN EXECUTE read_and_claim(100, 30, 'w1', 60)")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let plan = plan.join("\n");
    assert!(plan.contains("Index Cond: (msg_id = ANY"), "{plan}");
    assert!(!plan.contains("Join Filter"), "{plan}");
    sqlx::raw_sql("DEALLOCATE read_and_claim; RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .unwrap();
    drop(conn);
    h.shutdown().await;
}

/// The retry sweep and its next wake reach the steps waiting for a retry through
/// `workflow_steps_retry_idx`, however many finished steps are kept and whether or not the
/// steps were ever analyzed: without statistics the planner took that index (on
/// `next_retry_at IS NOT NULL`) to hold every step and scanned the whole table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_sweep_reads_only_the_steps_waiting_for_a_retry() {
    let h = Harness::orchestration_only(&[]).await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    sqlx::query(
        "INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable,
           max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms, state)
         SELECT $1, 'kept_' || i, 100 + i, 'X', 1, false, 'none', 0, 0, 'complete'
           FROM generate_series(1, 20000) AS i",
    )
    .bind(task)
    .execute(&h.db.pool)
    .await
    .unwrap();
    let seq_read = "SELECT coalesce(seq_tup_read, 0) FROM pg_stat_user_tables
                     WHERE schemaname = 'tasker' AND relname = 'workflow_steps'";
    // The sweep on a connection of its own, whose counts it flushes when it goes idle.
    let one = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&h.db.url)
        .await
        .unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&one)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before: i64 = sqlx::query_scalar(seq_read)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    let enqueuer = tasker_orchestration::StepEnqueuer::new(
        one.clone(),
        tasker_shared::queue::Notifier::spawn(h.db.pool.clone()),
        Duration::from_secs(1),
        100,
        "test".into(),
    );
    assert_eq!(enqueuer.sweep().await.unwrap(), 0);
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&one)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let arrived = "SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes
                    WHERE schemaname = 'tasker' AND indexrelname = 'workflow_steps_retry_idx'";
    while sqlx::query_scalar::<_, i64>(arrived)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the sweep never read workflow_steps_retry_idx"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: i64 = sqlx::query_scalar(seq_read)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(
        after - before < 1000,
        "the sweep scanned {} step rows",
        after - before
    );
    one.close().await;
    h.shutdown().await;
}
