//! Every example workflow through orchestration and a Rust worker, in one process, against
//! the real Postgres; results checked value by value.

use serde_json::json;
use std::time::Duration;
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::Harness;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_dags_compute_known_results() {
    let h = Harness::with_rust_worker(&[]).await;
    example_dags(&h).await;
    h.shutdown().await;
}

/// `[worker] results_via = "orchestration"`: the worker stores each result and sends it to
/// the orchestration results queue; the orchestrator's ResultProcessor applies it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_dags_compute_known_results_with_results_applied_by_the_orchestrator() {
    let h = Harness::with_rust_worker(&via_orchestrator()).await;
    let tasks = example_dags(&h).await;
    let handed_over: Vec<(String, bool)> = sqlx::query_as(
        "SELECT s.name, EXISTS (SELECT 1 FROM tasker.workflow_step_transitions l
                                 WHERE l.step_uuid = s.step_uuid
                                   AND l.to_state = 'enqueued_for_orchestration')
           FROM tasker.workflow_steps s WHERE s.task_uuid = ANY ($1)",
    )
    .bind(&tasks)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    assert!(!handed_over.is_empty());
    for (step, sent) in handed_over {
        assert!(sent, "{step} went through the orchestration results queue");
    }
    h.shutdown().await;
}

fn via_orchestrator() -> [(&'static str, Toml); 1] {
    [("worker.results_via", Toml::String("orchestration".into()))]
}

/// The four fixed example DAGs, their results checked; returns the tasks.
async fn example_dags(h: &Harness) -> Vec<uuid::Uuid> {
    let linear = h
        .create("linear_workflow", "linear_math", json!({"value": 6}))
        .await;
    let diamond = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    let tree = h
        .create("tree_workflow", "tree_math", json!({"value": 2}))
        .await;
    let mixed = h
        .create("mixed_dag_workflow", "mixed_dag_math", json!({"value": 5}))
        .await;
    for t in [linear, diamond, tree, mixed] {
        assert_eq!(h.wait(t, T).await.state, "complete");
    }
    assert_eq!(h.result_of(linear, "add_two").await, json!(8));
    assert_eq!(h.result_of(linear, "triple").await, json!(24));
    assert_eq!(h.result_of(linear, "square").await, json!(576));
    assert_eq!(h.result_of(linear, "minus_one").await, json!(575));
    assert_eq!(h.result_of(diamond, "left").await, json!(19));
    assert_eq!(h.result_of(diamond, "right").await, json!(18));
    assert_eq!(h.result_of(diamond, "join").await, json!(37));
    assert_eq!(h.result_of(tree, "merge").await, json!(115));
    assert_eq!(h.result_of(mixed, "transform").await, json!(255));
    assert_eq!(h.result_of(mixed, "finalize").await, json!(266));
    vec![linear, diamond, tree, mixed]
}

/// Each step of a chain after the first is claimed by the recording of its parent, in the
/// transaction that enqueued it, and runs on that worker; no message is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_continues_on_the_worker_that_recorded_each_link() {
    // Queue reads hold room for a whole batch each while they run; with the default
    // max_steps_in_flight two of them can hold all of it, and a recording then leaves its
    // child to the queue.
    let h = Harness::with_rust_worker(&[("worker.max_steps_in_flight", Toml::Integer(1000))]).await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 6}))
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    assert_eq!(h.result_of(task, "minus_one").await, json!(575));
    let claimed_with_enqueue: Vec<(String, bool)> = sqlx::query_as(
        "SELECT s.name,
                EXISTS (SELECT 1 FROM tasker.workflow_step_transitions l
                         WHERE l.step_uuid = s.step_uuid AND l.to_state = 'in_progress'
                           AND l.metadata @> '{\"claimed_by_recording\": true}')
           FROM tasker.workflow_steps s WHERE s.task_uuid = $1 ORDER BY s.position",
    )
    .bind(task)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let expected = [
        ("add_two", false),
        ("triple", true),
        ("square", true),
        ("minus_one", true),
    ]
    .map(|(name, together)| (name.to_string(), together));
    assert_eq!(claimed_with_enqueue, expected);
    let left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pgmq.q_worker_linear_workflow_queue
          WHERE message->>'task_uuid' = $1",
    )
    .bind(task.to_string())
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "every message deleted with its step's result");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_fulfillment_runs_end_to_end() {
    let h = Harness::with_rust_worker(&[]).await;
    let mut events = h.worker.as_ref().unwrap().subscribe();
    let task = h
        .create(
            "ecommerce",
            "order_fulfillment",
            json!({"order_id": 42, "items": [{"sku": "A", "quantity": 2, "price": 10.5}, {"sku": "B", "quantity": 1, "price": 4.0}]}),
        )
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    assert_eq!(
        h.result_of(task, "validate_order").await["total"],
        json!(25.0)
    );
    assert_eq!(
        h.result_of(task, "charge_payment").await,
        json!({"charge_id": "ch_42", "amount": 25.0, "currency": "USD"})
    );
    assert_eq!(
        h.result_of(task, "ship_order").await["tracking_number"],
        json!("TRK00000042")
    );
    let mut names = Vec::new();
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        names.push(e.name);
        if names.len() == 2 {
            break;
        }
    }
    names.sort();
    assert_eq!(names, ["order.validated", "payment.processed"]);
    let durable: i64 = sqlx::query_scalar("SELECT count(*) FROM pgmq.q_ecommerce_domain_events")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(durable, 1, "order.shipped is durable");
    h.shutdown().await;
}

/// Durable events are written by the recording of their step's result, in its transaction:
/// with no time at all for post-handler callbacks (where they were sent, after the commit,
/// and lost when the process died in between) every one is there when the task completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_events_are_committed_with_their_result() {
    durable_events_committed(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_events_are_committed_with_a_result_sent_to_the_orchestrator() {
    let [via] = via_orchestrator();
    durable_events_committed(Some(via)).await;
}

async fn durable_events_committed(extra: Option<(&str, Toml)>) {
    let mut overrides = vec![(
        "worker.mpsc_channels.ffi_dispatch.callback_timeout_ms",
        Toml::Integer(0),
    )];
    overrides.extend(extra);
    let h = Harness::with_rust_worker(&overrides).await;
    let mut tasks = Vec::new();
    for order_id in 0..5 {
        tasks.push(
            h.create(
                "ecommerce",
                "order_fulfillment",
                json!({"order_id": order_id, "items": [{"sku": "A", "quantity": 1, "price": 1.0}]}),
            )
            .await,
        );
    }
    for task in &tasks {
        assert_eq!(h.wait(*task, T).await.state, "complete");
    }
    let shipped: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT message FROM pgmq.q_ecommerce_domain_events ORDER BY msg_id")
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(shipped.len(), tasks.len(), "one order.shipped per task");
    for event in &shipped {
        assert_eq!(event["name"], "order.shipped");
        assert_eq!(event["step_name"], "ship_order");
        assert!(
            tasks.iter().any(|t| event["task_uuid"] == json!(t)),
            "{event}"
        );
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_scenarios_end_as_designed() {
    error_scenarios(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_scenarios_end_as_designed_with_results_applied_by_the_orchestrator() {
    error_scenarios(&via_orchestrator()).await;
}

async fn error_scenarios(overrides: &[(&str, Toml)]) {
    let h = Harness::with_rust_worker(overrides).await;
    let flaky = h
        .create("error_scenarios", "retry_then_succeed", json!({"value": 4}))
        .await;
    let doomed = h.create("error_scenarios", "always_fails", json!({})).await;
    let permanent = h
        .create("error_scenarios", "permanent_failure", json!({"value": 1}))
        .await;
    let flaky_row = h.wait(flaky, T).await;
    assert_eq!(flaky_row.state, "complete");
    assert_eq!(h.result_of(flaky, "after_flaky").await, json!(5));
    let flaky_step = h
        .steps(flaky)
        .await
        .into_iter()
        .find(|s| s.name == "flaky")
        .unwrap();
    assert_eq!(flaky_step.attempts, 3);

    assert_eq!(h.wait(doomed, T).await.state, "error");
    let doomed_step = &h.steps(doomed).await[0];
    assert_eq!(
        (doomed_step.state.as_str(), doomed_step.attempts),
        ("error", 3)
    );
    assert_eq!(
        doomed_step.last_error.as_ref().unwrap()["error_type"],
        json!("always_fails")
    );

    assert_eq!(h.wait(permanent, T).await.state, "error");
    let steps = h.steps(permanent).await;
    let by = |n: &str| steps.iter().find(|s| s.name == n).unwrap().clone();
    assert_eq!(by("fail_fast").state, "error");
    assert_eq!(
        by("fail_fast").attempts,
        1,
        "non-retryable failure is final despite max_attempts 5"
    );
    assert_eq!(
        by("after_slow").state,
        "pending",
        "nothing is enqueued after the task is blocked"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_examples_run_end_to_end() {
    dynamic_examples(&[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_examples_run_end_to_end_with_results_applied_by_the_orchestrator() {
    dynamic_examples(&via_orchestrator()).await;
}

async fn dynamic_examples(overrides: &[(&str, Toml)]) {
    let h = Harness::with_rust_worker(overrides).await;
    let routes = [
        (0, json!([]), "rejected"),
        (500, json!(["auto"]), "auto"),
        (5000, json!(["manager"]), "manager"),
        (50000, json!(["manager", "finance"]), "manager_and_finance"),
    ];
    let mut tasks = Vec::new();
    for (amount, _, _) in &routes {
        tasks.push(
            h.create("approvals", "approval_routing", json!({"amount": amount}))
                .await,
        );
    }
    let import = h
        .create(
            "imports",
            "batched_import",
            json!({"rows": 250, "batch_size": 100}),
        )
        .await;
    let empty = h
        .create(
            "imports",
            "batched_import",
            json!({"rows": 0, "batch_size": 100}),
        )
        .await;
    for (task, (amount, approvals, route)) in tasks.iter().zip(routes) {
        assert_eq!(h.wait(*task, T).await.state, "complete", "amount {amount}");
        assert_eq!(
            h.result_of(*task, "finalize").await,
            json!({"approved": amount > 0, "approvals": approvals, "route": route}),
            "amount {amount}"
        );
    }
    let created: Vec<String> = h
        .steps(tasks[0])
        .await
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(
        created,
        ["route", "finalize"],
        "choosing none creates no branch"
    );

    assert_eq!(h.wait(import, T).await.state, "complete");
    assert_eq!(
        h.result_of(import, "aggregate").await,
        json!({"batches": 3, "count": 250, "sum": 31125, "batch_ids": ["000", "001", "002"]})
    );
    assert_eq!(
        h.result_of(import, "process_batch_002").await,
        json!({"batch_id": "002", "count": 50, "sum": (200..250).sum::<u64>()})
    );
    assert_eq!(h.wait(empty, T).await.state, "complete");
    assert_eq!(
        h.result_of(empty, "aggregate").await,
        json!({"batches": 0, "count": 0, "sum": 0, "batch_ids": []})
    );
    h.shutdown().await;
}

/// A batchable step creating 1,000 batch workers whose handlers do next to nothing, and a
/// convergence step over all of them. Prints the figure (timing is never asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_batch_workers() {
    let h = Harness::with_rust_worker(&[]).await;
    let template = tasker_shared::template::parse_template(
        &std::fs::read_to_string(
            tasker_tests::repo_root().join("config/tasks/batched_import.yaml"),
        )
        .unwrap()
        .replace("name: batched_import", "name: thousand_batches")
        .replace("max_workers: 100", "max_workers: 1000"),
        std::path::Path::new("thousand_batches"),
    )
    .unwrap();
    tasker_shared::models::TemplateRegistry::new(h.db.pool.clone())
        .register(&template)
        .await
        .unwrap();
    let start = std::time::Instant::now();
    let task = h
        .create(
            "imports",
            "thousand_batches",
            json!({"rows": 1000, "batch_size": 1}),
        )
        .await;
    let planned: i64 = loop {
        let n =
            sqlx::query_scalar("SELECT count(*) FROM tasker.workflow_steps WHERE task_uuid = $1")
                .bind(task)
                .fetch_one(&h.db.pool)
                .await
                .unwrap();
        if n > 2 || start.elapsed() > T {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let fanned_out = start.elapsed();
    assert_eq!(
        planned, 1002,
        "every copy is created at once, with the plan's result"
    );
    assert_eq!(
        h.wait(task, Duration::from_secs(120)).await.state,
        "complete"
    );
    let total = start.elapsed();
    assert_eq!(h.result_of(task, "aggregate").await["count"], json!(1000));
    let (steps_created_ms, recorded): (f64, f64) = sqlx::query_as(
        "SELECT extract(epoch FROM max(created_at) - min(created_at))::float8 * 1000,
                extract(epoch FROM max(completed_at) - min(created_at))::float8
           FROM tasker.workflow_steps WHERE task_uuid = $1 AND step_type = 'batch_worker'",
    )
    .bind(task)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    println!(
        "1,000 batch workers: created in one statement (copies' created_at spread {steps_created_ms:.1} ms), \
         fan-out visible after {:.0} ms, all complete and converged in {:.2} s ({:.0} steps/s; last copy done {:.2} s after the first was created)",
        fanned_out.as_secs_f64() * 1000.0,
        total.as_secs_f64(),
        1002.0 / total.as_secs_f64(),
        recorded,
    );
    h.shutdown().await;
}
