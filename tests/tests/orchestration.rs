//! Orchestration against real queues and tables, with a test double on the worker side.

use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;
use tasker_orchestration::task_operations::{act_on_step, cancel_task, StepAction};
use tasker_orchestration::TaskRequest;
use tasker_shared::models::{StepRow, TaskRow, TransitionRow};
use tasker_tests::{FakeOutcome, FakeWorker, Harness};
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

fn ok(_: &str, _: i32) -> FakeOutcome {
    FakeOutcome::Success(json!(1))
}

/// When each step was enqueued and completed, from its transition history.
async fn timeline(
    h: &Harness,
    task: Uuid,
) -> HashMap<String, (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    let mut out = HashMap::new();
    for s in h.steps(task).await {
        let t = TransitionRow::for_step(&h.db.pool, s.step_uuid)
            .await
            .unwrap();
        let enq = t
            .iter()
            .find(|r| r.to_state == "enqueued")
            .unwrap()
            .created_at;
        let done = t
            .iter()
            .rfind(|r| r.to_state == "complete")
            .unwrap()
            .created_at;
        out.insert(s.name, (enq, done));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dag_shapes_complete_and_respect_dependencies() {
    let h = Harness::orchestration_only(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    for (ns, name, edges) in [
        (
            "linear_workflow",
            "linear_math",
            vec![
                ("add_two", "triple"),
                ("triple", "square"),
                ("square", "minus_one"),
            ],
        ),
        (
            "diamond_workflow",
            "diamond_math",
            vec![
                ("start", "left"),
                ("start", "right"),
                ("left", "join"),
                ("right", "join"),
            ],
        ),
        (
            "tree_workflow",
            "tree_math",
            vec![
                ("root", "branch_a"),
                ("branch_b", "leaf_b2"),
                ("leaf_a1", "merge"),
                ("leaf_b2", "merge"),
            ],
        ),
        (
            "mixed_dag_workflow",
            "mixed_dag_math",
            vec![
                ("init", "finalize"),
                ("transform", "finalize"),
                ("validate_a", "transform"),
            ],
        ),
    ] {
        let task = h.create(ns, name, json!({"value": 1})).await;
        assert_eq!(
            fake.run_task(ns, task, T, ok).await.state,
            "complete",
            "{name}"
        );
        let tl = timeline(&h, task).await;
        for (parent, child) in edges {
            assert!(
                tl[child].0 >= tl[parent].1,
                "{name}: {child} enqueued before {parent} completed"
            );
        }
        let history = TransitionRow::for_task(&h.db.pool, task).await.unwrap();
        assert_eq!(history.first().unwrap().to_state, "pending");
        assert_eq!(history.last().unwrap().to_state, "complete");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fails_twice_then_succeeds_within_max_attempts() {
    let h = Harness::orchestration_only(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h
        .create("error_scenarios", "retry_then_succeed", json!({"value": 1}))
        .await;
    let row = fake
        .run_task("error_scenarios", task, T, |step, attempt| {
            if step == "flaky" && attempt <= 2 {
                FakeOutcome::Failure {
                    retryable: true,
                    retry_after_ms: None,
                }
            } else {
                FakeOutcome::Success(json!(attempt))
            }
        })
        .await;
    assert_eq!(row.state, "complete");
    let flaky = StepRow::find_by_name(&h.db.pool, task, "flaky")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((flaky.attempts, flaky.results), (3, Some(json!(3))));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_failing_step_errors_after_max_attempts_with_backoff() {
    let h = Harness::orchestration_only(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h.create("error_scenarios", "always_fails", json!({})).await;
    let row = fake
        .run_task("error_scenarios", task, T, |_, _| FakeOutcome::Failure {
            retryable: true,
            retry_after_ms: None,
        })
        .await;
    assert_eq!(row.state, "error");
    let step = &h.steps(task).await[0];
    assert_eq!((step.state.as_str(), step.attempts), ("error", 3));
    let audits: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasker.step_result_audits WHERE step_uuid = $1")
            .bind(step.step_uuid)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(audits, 3);
    // Linear backoff, base 100 ms: the gaps between a failure and the next enqueue are at
    // least 100 ms, then 200 ms.
    let t = TransitionRow::for_step(&h.db.pool, step.step_uuid)
        .await
        .unwrap();
    let waits: Vec<_> = t
        .iter()
        .filter(|r| r.to_state == "waiting_for_retry")
        .map(|r| r.created_at)
        .collect();
    let enqueues: Vec<_> = t
        .iter()
        .filter(|r| r.to_state == "enqueued")
        .map(|r| r.created_at)
        .skip(1)
        .collect();
    assert_eq!(waits.len(), 2);
    for (i, (w, e)) in waits.iter().zip(&enqueues).enumerate() {
        let gap = (*e - *w).num_milliseconds();
        assert!(gap >= 100 * (i as i64 + 1), "retry {i} came after {gap} ms");
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_failure_blocks_task_and_stops_enqueueing() {
    let h = Harness::orchestration_only(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h
        .create("error_scenarios", "permanent_failure", json!({"value": 1}))
        .await;
    // start completes; fail_fast fails for good while slow_branch is still running (held).
    fake.drain("error_scenarios", ok).await;
    tasker_tests::wait_for_steps_in(&h.db.pool, task, "enqueued", 2, T).await;
    fake.drain("error_scenarios", |step, _| match step {
        "fail_fast" => FakeOutcome::Failure {
            retryable: false,
            retry_after_ms: None,
        },
        _ => FakeOutcome::Hold,
    })
    .await;
    let row = tasker_tests::wait_for_task(&h.db.pool, task, T).await;
    assert_eq!(row.state, "error");
    let history = TransitionRow::for_task(&h.db.pool, task).await.unwrap();
    let blocked = history
        .iter()
        .find(|r| r.to_state == "blocked_by_failures")
        .unwrap();
    assert_eq!(
        blocked.metadata["failed_steps"][0]["step"],
        json!("fail_fast")
    );
    // slow_branch's result lands later: its child must not be enqueued.
    let slow = StepRow::find_by_name(&h.db.pool, task, "slow_branch")
        .await
        .unwrap()
        .unwrap();
    sqlx::query("SELECT tasker.record_step_result($1, $2, 'fake-worker', true, '1', NULL, 1, '{}', NULL, NULL)")
        .bind(slow.step_uuid)
        .bind(slow.attempts)
        .execute(&h.db.pool)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = StepRow::find_by_name(&h.db.pool, task, "after_slow")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.state, "pending");
    assert_eq!(TaskRow::get(&h.db.pool, task).await.unwrap().state, "error");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_requests_create_one_task() {
    let h = Harness::orchestration_only(&[]).await;
    let request = TaskRequest {
        namespace: "diamond_workflow".into(),
        name: "diamond_math".into(),
        version: "1.0.0".into(),
        context: json!({"value": 2}),
        idempotency_key: Some("order-42".into()),
        initiator: None,
        run_at: None,
    };
    let results =
        futures::future::join_all((0..8).map(|_| h.core.initializer.create_task(&request))).await;
    let ids: std::collections::HashSet<Uuid> = results
        .iter()
        .map(|r| r.as_ref().unwrap().task_uuid)
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        results
            .iter()
            .filter(|r| r.as_ref().unwrap().created)
            .count(),
        1
    );
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM tasker.tasks")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(count, 1);
    h.shutdown().await;
}

/// What `create_and_read_task` hands back, and what `TaskRow::find_with_steps` reads in one
/// statement, is what reading the task and its steps separately returns: for a fixed DAG,
/// for a dynamic task, and for a request whose idempotency key is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_and_reading_in_one_statement_returns_the_stored_task() {
    let h = Harness::orchestration_only(&[]).await;
    let request =
        |ns: &str, name: &str, context: serde_json::Value, key: Option<&str>| TaskRequest {
            namespace: ns.into(),
            name: name.into(),
            version: "1.0.0".into(),
            context,
            idempotency_key: key.map(Into::into),
            initiator: Some("spec".into()),
            run_at: None,
        };
    let requests = [
        request(
            "diamond_workflow",
            "diamond_math",
            json!({"value": 2}),
            Some("k-1"),
        ),
        request(
            "approvals",
            "approval_routing",
            json!({"amount": 5000}),
            None,
        ),
        request(
            "diamond_workflow",
            "diamond_math",
            json!({"value": 3}),
            Some("k-1"),
        ),
    ];
    let mut first = None;
    for (i, req) in requests.iter().enumerate() {
        let (created, task, steps) = h.core.initializer.create_and_read_task(req).await.unwrap();
        assert_eq!(created.created, i < 2, "request {i}");
        assert_eq!(task.task_uuid, created.task_uuid);
        assert_eq!(task.state, created.state);
        assert!(!steps.is_empty(), "request {i} read no steps");
        // Nothing runs these steps, so the stored task is still as it was created.
        let stored = TaskRow::find(&h.db.pool, task.task_uuid)
            .await
            .unwrap()
            .unwrap();
        let stored_steps = StepRow::for_task(&h.db.pool, task.task_uuid).await.unwrap();
        let (together, together_steps) = TaskRow::find_with_steps(&h.db.pool, task.task_uuid)
            .await
            .unwrap()
            .unwrap();
        for (read, read_steps) in [(&task, &steps), (&together, &together_steps)] {
            assert_eq!(
                serde_json::to_value(read).unwrap(),
                serde_json::to_value(&stored).unwrap(),
                "request {i}"
            );
            assert_eq!(
                serde_json::to_value(read_steps).unwrap(),
                serde_json::to_value(&stored_steps).unwrap(),
                "request {i}"
            );
        }
        // One message per step enqueued at creation, as the workers read it, whether the
        // statement inserted it (a fixed DAG's roots) or start_task sent it (a dynamic task).
        let queue = format!("pgmq.q_worker_{}_queue", req.namespace);
        let messages: Vec<(serde_json::Value, i32)> = sqlx::query_as(&format!(
            "SELECT message, read_ct FROM {queue} WHERE message->>'task_uuid' = $1
              ORDER BY message->>'step_uuid'"
        ))
        .bind(task.task_uuid.to_string())
        .fetch_all(&h.db.pool)
        .await
        .unwrap();
        let mut enqueued: Vec<&StepRow> = steps.iter().filter(|s| s.state == "enqueued").collect();
        enqueued.sort_by_key(|s| s.step_uuid.to_string());
        let expected: Vec<(serde_json::Value, i32)> = enqueued
            .iter()
            .map(|s| {
                let message = json!({"task_uuid": task.task_uuid, "step_uuid": s.step_uuid,
                    "step_name": s.name, "namespace": req.namespace, "attempt": 1});
                (message, 0)
            })
            .collect();
        assert!(!expected.is_empty(), "request {i} enqueued nothing");
        assert_eq!(messages, expected, "request {i}");
        match i {
            0 => first = Some(task.task_uuid),
            2 => assert_eq!(Some(task.task_uuid), first, "the key's task comes back"),
            _ => {}
        }
    }
    let missing = TaskRow::find_with_steps(&h.db.pool, Uuid::now_v7()).await;
    assert!(matches!(missing, Ok(None)), "{missing:?}");

    // A waiter's read brings the steps only once the task is terminal.
    let task = first.unwrap();
    let running = TaskRow::find_with_steps_if_terminal(&h.db.pool, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(running.0.state, "steps_in_process");
    assert!(running.1.is_none(), "no steps for a running task");
    cancel_task(&h.db.pool, task, "test").await.unwrap();
    let (finished, steps) = TaskRow::find_with_steps_if_terminal(&h.db.pool, task)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(finished.state, "cancelled");
    assert_eq!(
        serde_json::to_value(steps.expect("a terminal task's steps")).unwrap(),
        serde_json::to_value(StepRow::for_task(&h.db.pool, task).await.unwrap()).unwrap()
    );
    h.shutdown().await;
}

/// Everything creation writes for a task, without its keys and times: the task, its steps,
/// edges, step log, task transitions and worker messages.
async fn creation_fingerprint(pool: &sqlx::PgPool, task: Uuid) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT jsonb_build_object(
           'task', (SELECT jsonb_build_object('state', t.state, 'context', t.context,
                      'initiator', t.initiator, 'key', t.idempotency_key)
                      FROM tasker.tasks t WHERE t.task_uuid = $1),
           'steps', (SELECT jsonb_agg(jsonb_build_object('name', s.name, 'position', s.position,
                       'state', s.state, 'attempts', s.attempts, 'max_attempts', s.max_attempts,
                       'retryable', s.retryable, 'backoff', s.backoff,
                       'base_ms', s.backoff_base_ms, 'max_ms', s.max_backoff_ms,
                       'timeout', s.timeout_seconds, 'callable', s.handler_callable,
                       'init', s.handler_initialization, 'events', s.publishes_events,
                       'parent_count', s.parent_count, 'pending_parents', s.pending_parents,
                       'enqueued', s.enqueued_at IS NOT NULL) ORDER BY s.name)
                       FROM tasker.workflow_steps s WHERE s.task_uuid = $1),
           'edges', (SELECT jsonb_agg(f.name || '->' || c.name ORDER BY f.name, c.name)
                       FROM tasker.workflow_step_edges e
                       JOIN tasker.workflow_steps f ON f.step_uuid = e.from_step_uuid
                       JOIN tasker.workflow_steps c ON c.step_uuid = e.to_step_uuid
                      WHERE e.task_uuid = $1),
           'step_log', (SELECT jsonb_agg(jsonb_build_object('step', s.name, 'from', l.from_state,
                          'to', l.to_state, 'sort_key', l.sort_key, 'actor', l.actor,
                          'metadata', l.metadata) ORDER BY s.name, l.sort_key)
                          FROM tasker.workflow_step_transitions l
                          JOIN tasker.workflow_steps s ON s.step_uuid = l.step_uuid
                         WHERE l.task_uuid = $1),
           'task_log', (SELECT jsonb_agg(jsonb_build_object('from', x.from_state,
                          'to', x.to_state, 'sort_key', x.sort_key, 'most_recent', x.most_recent,
                          'actor', x.actor, 'metadata', x.metadata) ORDER BY x.sort_key)
                          FROM tasker.task_transitions x WHERE x.task_uuid = $1),
           'messages', (SELECT jsonb_agg(jsonb_build_object('step', q.message->>'step_name',
                          'namespace', q.message->'namespace', 'attempt', q.message->'attempt',
                          'names_its_step', s.task_uuid = $1 AND s.name = q.message->>'step_name')
                          ORDER BY q.message->>'step_name')
                          FROM pgmq.q_worker_diamond_workflow_queue q
                          JOIN tasker.workflow_steps s
                            ON s.step_uuid = (q.message->>'step_uuid')::uuid
                         WHERE q.message->>'task_uuid' = $1::text))",
    )
    .bind(task)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Requests that arrive together are created together (tasker.create_tasks): each task is
/// stored exactly as one created on its own, and an idempotency key shared within the
/// batch, or already taken, gives back one task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_created_together_are_stored_as_tasks_created_alone() {
    // Nothing runs these steps, so every task is still as it was created.
    let h = Harness::orchestration_only(&[]).await;
    let request = |value: i64, key: Option<&str>| TaskRequest {
        namespace: "diamond_workflow".into(),
        name: "diamond_math".into(),
        version: "1.0.0".into(),
        context: json!({"value": value}),
        idempotency_key: key.map(Into::into),
        initiator: Some("spec".into()),
        run_at: None,
    };
    let (alone, _, _) = h
        .core
        .initializer
        .create_and_read_task(&request(7, None))
        .await
        .unwrap();
    let taken = h
        .core
        .initializer
        .create_task(&request(7, Some("taken")))
        .await
        .unwrap();
    assert!(taken.created);

    let mut requests: Vec<TaskRequest> = (0..30).map(|_| request(7, None)).collect();
    requests.extend((0..3).map(|_| request(7, Some("shared"))));
    requests.push(request(7, Some("taken")));
    let tree = TaskRequest {
        namespace: "tree_workflow".into(),
        name: "tree_math".into(),
        ..request(7, None)
    };
    requests.push(tree);
    let created =
        futures::future::try_join_all(requests.iter().map(|r| h.core.initializer.create_task(r)))
            .await
            .unwrap();

    let expected = creation_fingerprint(&h.db.pool, alone.task_uuid).await;
    assert_eq!(expected["messages"].as_array().map(Vec::len), Some(1));
    assert!(expected["step_log"].as_array().unwrap().len() > 4);
    let mut distinct = std::collections::HashSet::new();
    for (c, r) in created.iter().zip(&requests).take(30) {
        assert!(c.created && c.state == "steps_in_process", "{c:?}");
        assert!(distinct.insert(c.task_uuid), "one task per request");
        assert_eq!(r.initiator.as_deref(), Some("spec"));
        assert_eq!(
            creation_fingerprint(&h.db.pool, c.task_uuid).await,
            expected
        );
    }
    let shared = &created[30..33];
    assert_eq!(shared.iter().filter(|c| c.created).count(), 1, "{shared:?}");
    assert!(shared.iter().all(|c| c.task_uuid == shared[0].task_uuid));
    let mut keyed = expected.clone();
    keyed["task"]["key"] = json!("shared");
    assert_eq!(
        creation_fingerprint(&h.db.pool, shared[0].task_uuid).await,
        keyed
    );
    assert!(!created[33].created);
    assert_eq!(created[33].task_uuid, taken.task_uuid);
    assert!(created[34].created);
    let tree_steps = h.steps(created[34].task_uuid).await;
    assert!(tree_steps.len() > 3, "{tree_steps:?}");
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tasker.tasks WHERE initiator = 'spec'")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, 1 + 1 + 30 + 1 + 1, "no task created twice");
    // Tasks created together share their transaction. The requests were all made at once,
    // so at most the first two batch slots took one request each.
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT xmin::text) FROM tasker.tasks WHERE task_uuid = ANY($1)",
    )
    .bind(created.iter().map(|c| c.task_uuid).collect::<Vec<_>>())
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(
        transactions < 30,
        "{transactions} transactions for 32 new tasks"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_context_and_unknown_template_are_refused() {
    let h = Harness::orchestration_only(&[]).await;
    let mut req = TaskRequest {
        namespace: "ecommerce".into(),
        name: "order_fulfillment".into(),
        version: "1.0.0".into(),
        context: json!({"order_id": "x"}),
        idempotency_key: None,
        initiator: None,
        run_at: None,
    };
    let err = h
        .core
        .initializer
        .create_task(&req)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("input_schema") && err.contains("order_id"),
        "{err}"
    );
    req.version = "9.9.9".into();
    let err = h
        .core
        .initializer
        .create_task(&req)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("ecommerce/order_fulfillment@9.9.9"), "{err}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn result_delivered_twice_changes_nothing_the_second_time() {
    let h = Harness::orchestration_only(&[]).await;
    if let Some(o) = h.orchestrator.as_ref() {
        o.token().cancel();
    }
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    fake.drain("linear_workflow", ok).await;
    let results = tasker_shared::queue::QueueName::new("orchestration_step_results").unwrap();
    let msg: serde_json::Value =
        sqlx::query_scalar("SELECT message FROM pgmq.q_orchestration_step_results")
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    fake.queues.send(&results, &msg, &h.db.pool).await.unwrap();
    assert_eq!(h.core.drain_results().await.unwrap(), 2);
    let transitions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = $1",
    )
    .bind(task)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    // Deliver once more after everything settled: nothing moves.
    fake.queues.send(&results, &msg, &h.db.pool).await.unwrap();
    assert_eq!(h.core.drain_results().await.unwrap(), 1);
    let again: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions WHERE task_uuid = $1",
    )
    .bind(task)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(transitions, again);
    let steps = h.steps(task).await;
    assert_eq!(steps.iter().filter(|s| s.state == "complete").count(), 1);
    assert_eq!(steps.iter().filter(|s| s.state == "enqueued").count(), 1);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancellation_stops_work_and_late_results_do_not_revive() {
    let h = Harness::orchestration_only(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 1}))
        .await;
    fake.drain("diamond_workflow", ok).await;
    // left and right are enqueued; one is claimed and held (in flight) when we cancel.
    tasker_tests::wait_for_steps_in(&h.db.pool, task, "enqueued", 2, T).await;
    let recorded = fake
        .drain("diamond_workflow", |_, _| FakeOutcome::Hold)
        .await;
    assert_eq!(recorded, 0);
    let cancelled = cancel_task(&h.db.pool, task, "test").await.unwrap();
    assert_eq!(cancelled.state, "cancelled");
    let steps = h.steps(task).await;
    assert_eq!(
        steps.iter().find(|s| s.name == "join").unwrap().state,
        "cancelled"
    );
    // The held in-flight step's result still lands, and the task stays cancelled.
    let left = steps.iter().find(|s| s.name == "left").unwrap();
    assert_eq!(left.state, "in_progress");
    sqlx::query("SELECT tasker.record_step_result($1, $2, 'fake-worker', true, '5', NULL, 1, '{}', NULL, NULL)")
        .bind(left.step_uuid)
        .bind(left.attempts)
        .execute(&h.db.pool)
        .await
        .unwrap();
    h.core.drain_results().await.unwrap();
    tasker_tests::wait_for_results_applied(&h.db.pool, task, T).await;
    assert_eq!(
        StepRow::find_by_name(&h.db.pool, task, "left")
            .await
            .unwrap()
            .unwrap()
            .state,
        "complete"
    );
    assert_eq!(
        TaskRow::get(&h.db.pool, task).await.unwrap().state,
        "cancelled"
    );
    assert!(
        cancel_task(&h.db.pool, task, "test").await.is_err(),
        "cancelling twice is refused"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_reset_resolve_and_complete_let_the_task_continue() {
    let h = Harness::orchestration_only(&[]).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    let fail = |_: &str, _: i32| FakeOutcome::Failure {
        retryable: false,
        retry_after_ms: None,
    };

    // reset: the failed step gets fresh attempts and then succeeds.
    let task = h
        .create("error_scenarios", "retry_then_succeed", json!({"value": 1}))
        .await;
    assert_eq!(
        fake.run_task("error_scenarios", task, T, fail).await.state,
        "error"
    );
    let step = act_on_step(
        &h.db.pool,
        h.core.queues.notifier(),
        task,
        "flaky",
        &StepAction::Reset,
        "test",
    )
    .await
    .unwrap();
    assert_eq!(
        (step.state.as_str(), step.attempts, step.max_attempts),
        ("enqueued", 1, 4)
    );
    assert_eq!(
        fake.run_task("error_scenarios", task, T, ok).await.state,
        "complete"
    );

    // resolve: the child runs without the parent's result.
    let task = h
        .create("error_scenarios", "retry_then_succeed", json!({"value": 1}))
        .await;
    assert_eq!(
        fake.run_task("error_scenarios", task, T, fail).await.state,
        "error"
    );
    act_on_step(
        &h.db.pool,
        h.core.queues.notifier(),
        task,
        "flaky",
        &StepAction::Resolve,
        "test",
    )
    .await
    .unwrap();
    assert_eq!(
        fake.run_task("error_scenarios", task, T, ok).await.state,
        "complete"
    );
    assert_eq!(
        StepRow::find_by_name(&h.db.pool, task, "flaky")
            .await
            .unwrap()
            .unwrap()
            .state,
        "resolved_manually"
    );

    // complete: the given result becomes the step's result.
    let task = h
        .create("error_scenarios", "retry_then_succeed", json!({"value": 1}))
        .await;
    assert_eq!(
        fake.run_task("error_scenarios", task, T, fail).await.state,
        "error"
    );
    act_on_step(
        &h.db.pool,
        h.core.queues.notifier(),
        task,
        "flaky",
        &StepAction::Complete { result: json!(41) },
        "test",
    )
    .await
    .unwrap();
    assert_eq!(
        fake.run_task("error_scenarios", task, T, ok).await.state,
        "complete"
    );
    assert_eq!(h.result_of(task, "flaky").await, json!(41));

    // A complete step cannot be reset.
    let err = act_on_step(
        &h.db.pool,
        h.core.queues.notifier(),
        task,
        "after_flaky",
        &StepAction::Reset,
        "test",
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not possible"), "{err}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueuer_sweep_recovers_a_task_left_with_ready_steps() {
    let h = Harness::orchestration_only(&[(
        "orchestration.fallback_poll_interval_ms",
        tasker_tests::toml_value::Value::Integer(100),
    )])
    .await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    // Simulate a lost enqueue: the root step is pending again, its message gone, and the
    // task has not changed for a while.
    sqlx::query("UPDATE tasker.workflow_steps SET state = 'pending' WHERE task_uuid = $1 AND name = 'add_two'")
        .bind(task)
        .execute(&h.db.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM pgmq.q_worker_linear_workflow_queue")
        .execute(&h.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tasker.tasks SET updated_at = now() - interval '1 minute' WHERE task_uuid = $1",
    )
    .bind(task)
    .execute(&h.db.pool)
    .await
    .unwrap();
    tasker_tests::wait_for_steps_in(&h.db.pool, task, "enqueued", 1, T).await;
    let fake = FakeWorker::new(h.db.pool.clone()).await;
    assert_eq!(
        fake.run_task("linear_workflow", task, T, ok).await.state,
        "complete"
    );
    h.shutdown().await;
}
