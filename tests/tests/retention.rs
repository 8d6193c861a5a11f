//! Retention ([retention], `tasker.remove_finished_tasks`): finished tasks past their
//! state's period go with every row of theirs, or move to tasker_archive; open tasks stay;
//! a removed task answers 404 saying so. Tasks are finished through the real pipeline (a
//! fake worker's results, a cancel), then aged by moving their completed_at back.

use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tasker_orchestration::retention::{dry_run, run_once};
use tasker_orchestration::task_operations::{act_on_step, cancel_task, StepAction};
use tasker_shared::config::RetentionMode;
use tasker_shared::models::{StoreError, TaskRow};
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::{FakeOutcome, FakeWorker, Harness};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

/// Every table holding a task's rows; each has a task_uuid column.
const TABLES: [&str; 5] = [
    "tasks",
    "workflow_steps",
    "workflow_step_edges",
    "step_blueprints",
    "step_result_audit_log",
];

/// The orchestrator's own runs off, so each test decides when retention runs; small batches,
/// so runs take several.
fn settings(mode: &str) -> Vec<(&'static str, Toml)> {
    vec![
        ("retention.enabled", Toml::Boolean(false)),
        ("retention.batch_size", Toml::Integer(2)),
        ("retention.mode", Toml::String(mode.into())),
    ]
}

fn ok(_: &str, _: i32) -> FakeOutcome {
    FakeOutcome::Success(json!(1))
}

fn fail(_: &str, _: i32) -> FakeOutcome {
    FakeOutcome::Failure {
        retryable: false,
        retry_after_ms: None,
    }
}

/// A diamond task (four steps, four edges) taken to `state`.
async fn finished(h: &Harness, fake: &FakeWorker, state: &str) -> Uuid {
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let pool = &h.db.pool;
    match state {
        "complete" => {
            fake.run_task("diamond_workflow", task, T, ok).await;
        }
        "error" => {
            fake.run_task("diamond_workflow", task, T, fail).await;
        }
        "resolved_manually" => {
            fake.run_task("diamond_workflow", task, T, fail).await;
            let moved: bool = sqlx::query_scalar(
                "SELECT tasker.transition_task($1, 'error', 'resolved_manually', 'test')",
            )
            .bind(task)
            .fetch_one(pool)
            .await
            .unwrap();
            assert!(moved);
        }
        "cancelled" => {
            cancel_task(pool, task, "test").await.unwrap();
        }
        other => panic!("no way to finish a task as {other}"),
    }
    assert_eq!(TaskRow::get(pool, task).await.unwrap().state, state);
    task
}

/// Moves the task's finish back by `ago` (a Postgres interval).
async fn age(pool: &sqlx::PgPool, task: Uuid, ago: &str) {
    sqlx::query("UPDATE tasker.tasks SET completed_at = now() - $2::interval WHERE task_uuid = $1")
        .bind(task)
        .bind(ago)
        .execute(pool)
        .await
        .unwrap();
}

/// The task's rows in each of [`TABLES`] in `schema`, as JSON, in a stable order.
async fn rows(pool: &sqlx::PgPool, schema: &str, task: Uuid) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for table in TABLES {
        let rows: Vec<Value> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(x) FROM {schema}.{table} x WHERE x.task_uuid = $1
              ORDER BY to_jsonb(x)::text"
        ))
        .bind(task)
        .fetch_all(pool)
        .await
        .unwrap();
        out.push(rows);
    }
    out
}

fn counts(rows: &[Vec<Value>]) -> Vec<usize> {
    rows.iter().map(Vec::len).collect()
}

fn removed_per_state(
    report: &tasker_orchestration::retention::RetentionReport,
) -> HashMap<&str, u64> {
    report.states.iter().map(|s| (s.state, s.tasks)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removes_exactly_the_tasks_past_their_state_period_and_never_an_open_one() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    let config = &h.config.retention;
    // Defaults: complete 7d, error (and resolved_manually) 30d, cancelled 7d.
    let mut due = Vec::new();
    let mut kept = Vec::new();
    for (state, ago, removed) in [
        ("complete", "8 days", true),
        ("complete", "9 days", true),
        ("complete", "10 days", true),
        ("complete", "6 days", false),
        ("error", "31 days", true),
        ("error", "8 days", false),
        ("resolved_manually", "31 days", true),
        ("resolved_manually", "29 days", false),
        ("cancelled", "8 days", true),
        ("cancelled", "1 hour", false),
    ] {
        let task = finished(&h, &fake, state).await;
        age(pool, task, ago).await;
        if removed {
            due.push(task);
        } else {
            kept.push(task);
        }
    }
    // Open for a year, its steps enqueued and never run: old, but not finished.
    let open = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    sqlx::query(
        "UPDATE tasker.tasks SET created_at = now() - interval '1 year',
                                 updated_at = now() - interval '1 year'
          WHERE task_uuid = $1",
    )
    .bind(open)
    .execute(pool)
    .await
    .unwrap();
    kept.push(open);

    let mut before = HashMap::new();
    for &task in due.iter().chain(&kept) {
        before.insert(task, rows(pool, "tasker", task).await);
    }
    // A completed diamond has rows in every table a task's cascade must reach.
    let complete = counts(&before[&due[0]]);
    assert_eq!(&complete[..3], &[1, 4, 4], "task, steps, edges");
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasker.step_result_audits WHERE task_uuid = $1")
            .bind(due[0])
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(audits, 4, "one audit per step's attempt");
    let failed = counts(&before[&due[3]]);
    assert!(
        failed[4] > 0,
        "a failed task has rows in the audit log, which the removal must reach: {failed:?}"
    );

    let report = run_once(pool, config, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        removed_per_state(&report),
        HashMap::from([
            ("complete", 3),
            ("error", 1),
            ("resolved_manually", 1),
            ("cancelled", 1)
        ])
    );
    for task in &due {
        assert_eq!(
            counts(&rows(pool, "tasker", *task).await),
            vec![0; TABLES.len()],
            "every row of removed task {task} is gone"
        );
        let tombstone: (String, bool) =
            sqlx::query_as("SELECT state, archived FROM tasker.removed_tasks WHERE task_uuid = $1")
                .bind(task)
                .fetch_one(pool)
                .await
                .unwrap();
        assert!(!tombstone.1);
        assert_eq!(
            counts(&rows(pool, "tasker_archive", *task).await),
            vec![0; TABLES.len()]
        );
    }
    for task in &kept {
        assert_eq!(
            rows(pool, "tasker", *task).await,
            before[task],
            "kept task {task} is untouched"
        );
    }
    let again = run_once(pool, config, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(again.tasks(), 0, "a second run finds nothing more");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_counts_per_state_and_removes_nothing() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    let mut tasks = Vec::new();
    for (state, ago) in [
        ("complete", "8 days"),
        ("complete", "1 day"),
        ("cancelled", "8 days"),
    ] {
        let task = finished(&h, &fake, state).await;
        age(pool, task, ago).await;
        tasks.push(task);
    }
    let mut before = Vec::new();
    for &task in &tasks {
        before.push(rows(pool, "tasker", task).await);
    }
    let report = dry_run(pool, &h.config.retention).await.unwrap();
    assert!(report.dry_run);
    assert_eq!(
        removed_per_state(&report),
        HashMap::from([
            ("complete", 1),
            ("error", 0),
            ("resolved_manually", 0),
            ("cancelled", 1)
        ])
    );
    for (task, rows_before) in tasks.iter().zip(&before) {
        assert_eq!(&rows(pool, "tasker", *task).await, rows_before);
    }
    let tombstones: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker.removed_tasks")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(tombstones, 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_mode_moves_every_row_to_the_archive_where_it_stays_readable() {
    let h = Harness::orchestration_only(&settings("archive")).await;
    assert_eq!(h.config.retention.mode, RetentionMode::Archive);
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    // The archive's tables are the live ones' columns, in order (rows are copied with *).
    for table in TABLES {
        let shape = |schema: &'static str| {
            sqlx::query_scalar::<_, Vec<String>>(
                "SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                  ORDER BY a.attnum)
                   FROM pg_attribute a
                  WHERE a.attrelid = format('%I.%I', $1::text, $2::text)::regclass
                    AND a.attnum > 0 AND NOT a.attisdropped",
            )
            .bind(schema)
            .bind(table)
            .fetch_one(pool)
        };
        assert_eq!(
            shape("tasker_archive").await.unwrap(),
            shape("tasker").await.unwrap(),
            "tasker_archive.{table} has tasker.{table}'s columns"
        );
    }
    let old = finished(&h, &fake, "complete").await;
    age(pool, old, "8 days").await;
    let fresh = finished(&h, &fake, "complete").await;
    let live = rows(pool, "tasker", old).await;
    let fresh_rows = rows(pool, "tasker", fresh).await;

    let report = run_once(pool, &h.config.retention, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.tasks(), 1);
    assert_eq!(rows(pool, "tasker_archive", old).await, live, "moved whole");
    assert_eq!(
        counts(&rows(pool, "tasker", old).await),
        vec![0; TABLES.len()]
    );
    assert_eq!(rows(pool, "tasker", fresh).await, fresh_rows);
    assert_eq!(
        counts(&rows(pool, "tasker_archive", fresh).await),
        vec![0; TABLES.len()]
    );
    let (namespace, state): (String, String) = sqlx::query_as(
        "SELECT namespace, state FROM tasker_archive.task_rows WHERE task_uuid = $1",
    )
    .bind(old)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (namespace.as_str(), state.as_str()),
        ("diamond_workflow", "complete")
    );

    let app = tasker_orchestration::api::router(h.core.clone());
    let (status, body) = tasker_tests::http(&app, "GET", &format!("/v1/tasks/{old}"), None).await;
    assert_eq!(status, 404, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"]["code"], "task_archived");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("removed by retention") && message.contains("tasker_archive.task_rows"),
        "{message}"
    );
    // Once its tombstone is forgotten, the archive still answers for it.
    sqlx::query("DELETE FROM tasker.removed_tasks")
        .execute(pool)
        .await
        .unwrap();
    let (status, body) = tasker_tests::http(&app, "GET", &format!("/v1/tasks/{old}"), None).await;
    assert_eq!(status, 404);
    assert!(body.contains("task_archived"), "{body}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_task_answers_404_saying_retention_removed_it() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    let task = finished(&h, &fake, "complete").await;
    age(pool, task, "8 days").await;
    let report = run_once(pool, &h.config.retention, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.tasks(), 1);

    let app = tasker_orchestration::api::router(h.core.clone());
    for (method, uri, body) in [
        ("GET", format!("/v1/tasks/{task}"), None),
        ("GET", format!("/v1/tasks/{task}?wait_seconds=1"), None),
        ("GET", format!("/v1/tasks/{task}/steps"), None),
        (
            "PATCH",
            format!("/v1/tasks/{task}/steps/start"),
            Some(r#"{"action": "reset"}"#.to_string()),
        ),
        ("DELETE", format!("/v1/tasks/{task}"), None),
    ] {
        let (status, text) = tasker_tests::http(&app, method, &uri, body).await;
        assert_eq!(status, 404, "{method} {uri}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], "task_removed", "{method} {uri}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&format!(
                "task {task} was removed by retention (complete, removed 20"
            )),
            "{method} {uri}: {message}"
        );
    }
    for page in [
        format!("/ui/tasks/{task}"),
        format!("/ui/tasks/{task}/steps/start"),
    ] {
        let (status, html) = tasker_tests::http(&app, "GET", &page, None).await;
        assert_eq!(status, 404, "{page}");
        assert!(html.contains("was removed by retention"), "{page}: {html}");
    }
    // `tasker task get` reads through TaskRow::get.
    match TaskRow::get(pool, task).await {
        Err(StoreError::Removed(removed)) => {
            assert_eq!((removed.task_uuid, removed.archived), (task, false))
        }
        other => panic!("expected Removed, got {other:?}"),
    }
    // An id that never existed is still plainly unknown.
    let (status, text) =
        tasker_tests::http(&app, "GET", &format!("/v1/tasks/{}", Uuid::now_v7()), None).await;
    assert_eq!(status, 404);
    assert!(text.contains("task_not_found"), "{text}");

    // Tombstones older than tombstone_after (90d) are forgotten by the next run.
    sqlx::query("UPDATE tasker.removed_tasks SET removed_at = now() - interval '91 days'")
        .execute(pool)
        .await
        .unwrap();
    let report = run_once(pool, &h.config.retention, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.tombstones_pruned, 1);
    let (status, text) = tasker_tests::http(&app, "GET", &format!("/v1/tasks/{task}"), None).await;
    assert_eq!(status, 404);
    assert!(text.contains("task_not_found"), "{text}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_beside_task_creation_and_completion_blocks_nothing_and_loses_nothing() {
    // The orchestrator's own loop too, every second.
    let mut overrides = settings("delete");
    overrides[0] = ("retention.enabled", Toml::Boolean(true));
    overrides.push(("retention.interval_seconds", Toml::Integer(1)));
    let h = Harness::orchestration_only(&overrides).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = h.db.pool.clone();
    let mut old = Vec::new();
    for _ in 0..8 {
        let task = finished(&h, &fake, "complete").await;
        age(&pool, task, "8 days").await;
        old.push(task);
    }
    let h = std::sync::Arc::new(h);
    let busy = {
        let h = h.clone();
        tokio::spawn(async move {
            let fake = FakeWorker::new(h.db.pool.clone()).await;
            let mut made = Vec::new();
            for i in 0..8 {
                let started = Instant::now();
                let task = h
                    .create("linear_workflow", "linear_math", json!({"value": i}))
                    .await;
                fake.run_task("linear_workflow", task, T, ok).await;
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "task {i} took {:?}",
                    started.elapsed()
                );
                made.push(task);
            }
            made
        })
    };
    let deadline = Instant::now() + T;
    let old_gone = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM tasker.removed_tasks WHERE task_uuid = ANY ($1)",
        )
        .bind(&old)
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    while old_gone().await < old.len() as i64 || !busy.is_finished() {
        let started = Instant::now();
        run_once(&pool, &h.config.retention, &CancellationToken::new())
            .await
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "a run took {:?}",
            started.elapsed()
        );
        assert!(Instant::now() < deadline, "old tasks still there");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let made = busy.await.unwrap();
    // The loop and these runs removed the old tasks between them, and nothing else.
    let tombstones: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker.removed_tasks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tombstones, old.len() as i64, "no new task was removed");
    for task in &old {
        assert_eq!(
            counts(&rows(&pool, "tasker", *task).await),
            vec![0; TABLES.len()]
        );
    }
    for task in made {
        let row = TaskRow::get(&pool, task).await.unwrap();
        assert_eq!(row.state, "complete");
        let steps = tasker_shared::models::StepRow::for_task(&pool, task)
            .await
            .unwrap();
        assert!(
            !steps.is_empty() && steps.iter().all(|s| s.state == "complete"),
            "{task}"
        );
    }
    match std::sync::Arc::try_unwrap(h) {
        Ok(h) => h.shutdown().await,
        Err(_) => panic!("the harness is still shared"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_task_held_or_reset_meanwhile_is_skipped_or_removed_whole_never_half() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    let mut failed = Vec::new();
    for _ in 0..6 {
        let task = finished(&h, &fake, "error").await;
        age(pool, task, "31 days").await;
        failed.push(task);
    }
    // An operator's action holds three of them (as act_on_step locks a task): retention
    // goes past them without waiting and removes the other three.
    let held = &failed[..3];
    let mut operator = pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tasker.tasks WHERE task_uuid = ANY ($1) FOR NO KEY UPDATE")
        .bind(held)
        .execute(&mut *operator)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let report = tokio::time::timeout(
        Duration::from_secs(10),
        run_once(pool, &h.config.retention, &stop),
    )
    .await
    .expect("retention does not wait for a held task")
    .unwrap();
    assert_eq!(report.tasks(), 3);
    operator.rollback().await.unwrap();

    // Resets of all six race a second run: each held task is revived whole or removed
    // whole; the three removed before answer that they were removed.
    let resets = failed.iter().map(|&task| {
        let core = h.core.clone();
        async move {
            let outcome = act_on_step(
                &core.pool,
                core.queues.notifier(),
                task,
                "start",
                &StepAction::Reset,
                "test",
            )
            .await;
            (task, outcome)
        }
    });
    let (outcomes, second) = tokio::join!(
        futures::future::join_all(resets),
        run_once(pool, &h.config.retention, &stop)
    );
    let mut removed = 0;
    for (task, outcome) in outcomes {
        let left = counts(&rows(pool, "tasker", task).await);
        match outcome {
            Ok(_) => {
                assert!(held.contains(&task), "{task} was removed before");
                assert_eq!(&left[..3], &[1, 4, 4], "revived task {task} is whole");
                assert_ne!(TaskRow::get(pool, task).await.unwrap().state, "error");
            }
            Err(tasker_orchestration::OrchestrationError::Store(StoreError::Removed(_))) => {
                assert_eq!(
                    left,
                    vec![0; TABLES.len()],
                    "removed task {task} is gone whole"
                );
                removed += 1;
            }
            Err(e) => panic!("reset of {task}: {e}"),
        }
    }
    assert_eq!(report.tasks() + second.unwrap().tasks(), removed);
    h.shutdown().await;
}

/// Durable domain events nobody consumed are deleted once older than `domain_events_after`,
/// from the queue and its archive; newer ones stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_events_older_than_their_period_are_deleted_from_queue_and_archive() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let pool = &h.db.pool;
    for n in 0..5 {
        sqlx::query("SELECT pgmq.send('ecommerce_domain_events', $1::jsonb)")
            .bind(json!({ "n": n }))
            .execute(pool)
            .await
            .unwrap();
    }
    // Three sent eight days ago (one of them read and archived by a consumer), two now.
    sqlx::query(
        "UPDATE pgmq.q_ecommerce_domain_events SET enqueued_at = now() - interval '8 days'
          WHERE (message->>'n')::int < 3",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("SELECT pgmq.archive('ecommerce_domain_events', 1::bigint)")
        .execute(pool)
        .await
        .unwrap();
    let dry = dry_run(pool, &h.config.retention).await.unwrap();
    assert_eq!(dry.domain_events_removed, 3);
    let report = run_once(pool, &h.config.retention, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.domain_events_removed, 3);
    let left: Vec<i32> = sqlx::query_scalar(
        "SELECT (message->>'n')::int FROM pgmq.q_ecommerce_domain_events
         UNION ALL SELECT (message->>'n')::int FROM pgmq.a_ecommerce_domain_events ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(left, [3, 4]);
}

/// When `tasks_deleted` (which deletes a removed task's steps) meets a held step, it deletes
/// them through their primary key: a scan that visits an array's keys in sorted order, so the
/// locks come in key order, as every other writer takes them. Checked under the trigger
/// function's own settings, with the ids shuffled: the plan is that scan, and the rows go in
/// key order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_deletes_a_batchs_steps_in_key_order_through_the_primary_key() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    let mut steps: Vec<Uuid> = Vec::new();
    for _ in 0..3 {
        let task = finished(&h, &fake, "complete").await;
        steps.extend(
            sqlx::query_scalar::<_, Uuid>(
                "SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1",
            )
            .bind(task)
            .fetch_all(pool)
            .await
            .unwrap(),
        );
    }
    steps.reverse();
    steps.swap(1, 7);
    let settings: Vec<String> =
        sqlx::query_scalar("SELECT unnest(proconfig) FROM pg_proc WHERE proname = 'tasks_deleted'")
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(
        settings.iter().any(|s| s == "enable_seqscan=off"),
        "{settings:?}"
    );
    let mut tx = pool.begin().await.unwrap();
    for setting in &settings {
        let (name, value) = setting.split_once('=').unwrap();
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(name)
            .bind(value)
            .execute(&mut *tx)
            .await
            .unwrap();
    }
    let delete = "DELETE FROM tasker.workflow_steps w WHERE w.step_uuid = ANY ($1)";
    let plan: Value = sqlx::query_scalar(&format!("EXPLAIN (FORMAT JSON) {delete}"))
        .bind(&steps)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let scan = &plan[0]["Plan"]["Plans"][0];
    assert_eq!(scan["Node Type"], "Index Scan", "{plan}");
    assert_eq!(scan["Index Name"], "workflow_steps_pkey", "{plan}");
    let deleted: Vec<Uuid> = sqlx::query_scalar(&format!("{delete} RETURNING w.step_uuid"))
        .bind(&steps)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    let mut sorted = steps.clone();
    sorted.sort();
    assert_eq!(deleted, sorted, "deleted in key order");
    tx.rollback().await.unwrap();
    h.shutdown().await;
}

/// `tasks_deleted` deletes a task's steps in name order, one pass; a writer that holds one of
/// them and then locks another, in key order as writers do, is not left in a deadlock: the
/// removal gives up the pass when it waits, and waits in key order instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_meeting_a_held_step_waits_for_it_in_key_order_without_a_deadlock() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    // Two steps whose key order is not their name order: the writer holds the first by key,
    // which the name-order pass reaches after the other.
    let (task, first, second) = loop {
        let task = finished(&h, &fake, "complete").await;
        let by_name: Vec<Uuid> = sqlx::query_scalar(
            "SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 ORDER BY name",
        )
        .bind(task)
        .fetch_all(pool)
        .await
        .unwrap();
        let inverted = by_name.iter().enumerate().find_map(|(i, &later)| {
            by_name[..i]
                .iter()
                .find(|&&earlier| earlier > later)
                .map(|&earlier| (later, earlier))
        });
        if let Some((first, second)) = inverted {
            break (task, first, second);
        }
        sqlx::query("DELETE FROM tasker.tasks WHERE task_uuid = $1")
            .bind(task)
            .execute(pool)
            .await
            .unwrap();
    };
    assert!(first < second);

    let mut writer = pool.begin().await.unwrap();
    let lock = "SELECT 1 FROM tasker.workflow_steps WHERE step_uuid = $1 FOR NO KEY UPDATE";
    sqlx::query(lock)
        .bind(first)
        .execute(&mut *writer)
        .await
        .unwrap();
    let removal = tokio::spawn({
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT tasker.remove_finished_tasks('complete', '0', 10, false)",
            )
            .fetch_one(&pool)
            .await
        }
    });
    let deadline = Instant::now() + T;
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                             WHERE datname = current_database()
                               AND wait_event_type = 'Lock'
                               AND query LIKE '%remove_finished_tasks%'
                               AND pid <> pg_backend_pid())",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the removal never waited for the held step"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Longer than the deadlock check, so a deadlock would be found and reported here or in
    // the removal.
    exec(&mut writer, "SET LOCAL lock_timeout = '3s'").await;
    sqlx::query(lock)
        .bind(second)
        .execute(&mut *writer)
        .await
        .expect("the writer gets the second step: the removal does not hold it while it waits");
    if removal.is_finished() {
        panic!(
            "the removal ended while the step was held: {:?}",
            removal.await.unwrap()
        );
    }
    writer.commit().await.unwrap();
    let removed = tokio::time::timeout(T, removal)
        .await
        .expect("the removal goes on once the step is free")
        .unwrap()
        .expect("the removal is not a deadlock's victim");
    assert_eq!(removed, 1);
    assert_eq!(
        counts(&rows(pool, "tasker", task).await),
        vec![0; TABLES.len()]
    );
    h.shutdown().await;
}

/// Removes one finished task on `conn`; what `wal_compression` was while it deleted (a
/// statement trigger on the tombstones records it into `public.seen`) and what it is after.
async fn remove_one(conn: &mut sqlx::PgConnection) -> (String, String) {
    let removed: i32 =
        sqlx::query_scalar("SELECT tasker.remove_finished_tasks('complete', '0', 1, false)")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(removed, 1);
    let during = sqlx::query_scalar("SELECT setting FROM public.seen ORDER BY n DESC LIMIT 1")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let after = sqlx::query_scalar("SELECT current_setting('wal_compression')")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    (during, after)
}

async fn exec(conn: &mut sqlx::PgConnection, statement: &str) {
    sqlx::query(statement).execute(conn).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_compresses_its_page_images_where_the_role_may_and_leaves_the_setting_as_it_was() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(finished(&h, &fake, "complete").await);
    }
    // A role of this test's own (roles are the cluster's, databases the test's).
    let role = format!("{}_retention", h.db.name);
    for statement in [
        "CREATE TABLE public.seen (n serial, setting text)".to_string(),
        "CREATE FUNCTION public.see() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN INSERT INTO public.seen (setting) VALUES (current_setting('wal_compression'));
           RETURN NULL; END $$"
            .to_string(),
        "CREATE TRIGGER see AFTER INSERT ON tasker.removed_tasks
           FOR EACH STATEMENT EXECUTE FUNCTION public.see()"
            .to_string(),
        format!("DROP ROLE IF EXISTS {role}"),
        format!("CREATE ROLE {role}"),
        format!("GRANT USAGE ON SCHEMA tasker TO {role}"),
        format!("GRANT ALL ON ALL TABLES IN SCHEMA tasker, public TO {role}"),
        format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"),
    ] {
        sqlx::query(&statement).execute(pool).await.unwrap();
    }
    // lz4 where the server has it, else Postgres' own (pglz).
    let has_lz4: bool = sqlx::query_scalar(
        "SELECT 'lz4' = ANY (enumvals) FROM pg_settings WHERE name = 'wal_compression'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let compressed = if has_lz4 { "lz4" } else { "pglz" };
    let report = dry_run(pool, &h.config.retention).await.unwrap();
    assert_eq!(report.wal_compression, compressed, "what a dry run reports");
    let mut conn = pool.acquire().await.unwrap();

    // A superuser (the tests' role) may: compressed while deleting, off again after.
    assert_eq!(
        remove_one(&mut conn).await,
        (compressed.to_string(), "off".to_string())
    );

    // A role that may not set it removes all the same, uncompressed.
    exec(&mut conn, &format!("SET ROLE {role}")).await;
    assert_eq!(
        remove_one(&mut conn).await,
        ("off".to_string(), "off".to_string()),
        "no privilege, no compression"
    );

    // Granted the parameter, it compresses, inside a caller's transaction, and puts the
    // setting back before that transaction goes on.
    exec(&mut conn, "RESET ROLE").await;
    exec(
        &mut conn,
        &format!("GRANT SET ON PARAMETER wal_compression TO {role}"),
    )
    .await;
    exec(&mut conn, &format!("SET ROLE {role}")).await;
    exec(&mut conn, "BEGIN").await;
    assert_eq!(
        remove_one(&mut conn).await,
        (compressed.to_string(), "off".to_string()),
        "granted: compressed, and put back inside the caller's transaction"
    );
    exec(&mut conn, "COMMIT").await;

    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasker.tasks WHERE task_uuid = ANY ($1)")
            .bind(&tasks)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(left, 0);
    exec(&mut conn, "RESET ROLE").await;
    drop(conn);
    for statement in [
        format!("REVOKE SET ON PARAMETER wal_compression FROM {role}"),
        format!("DROP OWNED BY {role}"),
        format!("DROP ROLE {role}"),
    ] {
        sqlx::query(&statement).execute(pool).await.unwrap();
    }
    h.shutdown().await;
}

/// A removal and a task deleted by hand later in the same transaction: each task's steps,
/// edges and audit rows go with it, by the same trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_deleted_by_hand_after_a_removal_in_one_transaction_takes_its_rows() {
    let h = Harness::orchestration_only(&settings("delete")).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let pool = &h.db.pool;
    let removed = finished(&h, &fake, "complete").await;
    let by_hand = finished(&h, &fake, "error").await;
    let to_take = counts(&rows(pool, "tasker", by_hand).await);
    assert!(
        to_take[1] > 0 && to_take[2] > 0 && to_take[4] > 0,
        "steps, edges and a failed task's audit rows to take: {to_take:?}"
    );
    let mut tx = pool.begin().await.unwrap();
    let n: i32 =
        sqlx::query_scalar("SELECT tasker.remove_finished_tasks('complete', '0', 10, false)")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(n, 1);
    sqlx::query("DELETE FROM tasker.tasks WHERE task_uuid = $1")
        .bind(by_hand)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    for task in [removed, by_hand] {
        assert_eq!(
            counts(&rows(pool, "tasker", task).await),
            vec![0; TABLES.len()],
            "every row of {task} is gone"
        );
    }
    h.shutdown().await;
}
