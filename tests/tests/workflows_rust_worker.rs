//! Every example workflow through orchestration and a Rust worker, in one process, against
//! the real Postgres; results checked value by value.

use serde_json::json;
use std::time::Duration;
use tasker_tests::Harness;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_dags_compute_known_results() {
    let h = Harness::with_rust_worker(&[]).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_scenarios_end_as_designed() {
    let h = Harness::with_rust_worker(&[]).await;
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
