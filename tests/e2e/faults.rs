//! Faults, each against real processes: a worker killed mid-handler, an orchestrator killed
//! and restarted, a handler that never returns.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{create, tasker, FAST_RECOVERY};
use tasker_shared::models::StepRow;
use tasker_tests::testing::TestDatabase;
use tasker_tests::{register_examples, wait_for_steps_in, wait_for_task};

const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_steps_finish_on_another_worker() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("kill_worker", "server", &db, &["server"], FAST_RECOVERY);
    let mut doomed = tasker(
        "kill_worker",
        "doomed",
        &db,
        &["worker", "--worker-id", "doomed"],
        FAST_RECOVERY,
    );
    let task = create(
        &db,
        "sleep_workflow",
        "parallel_sleep",
        json!({"sleep_ms": 1500}),
    )
    .await;
    wait_for_steps_in(&db.pool, task, "in_progress", 4, T).await;
    doomed.kill_hard();
    let _rescuer = tasker(
        "kill_worker",
        "rescuer",
        &db,
        &["worker", "--worker-id", "rescuer"],
        FAST_RECOVERY,
    );
    assert_eq!(wait_for_task(&db.pool, task, T).await.state, "complete");
    for s in StepRow::for_task(&db.pool, task).await.unwrap() {
        assert_eq!(
            s.attempts, 2,
            "{}: the killed attempt counts, the rescue is the second",
            s.name
        );
    }
    let by: Vec<(String, i32)> =
        sqlx::query_as("SELECT DISTINCT worker_id, attempt FROM tasker.step_result_audits")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        by,
        [("rescuer".to_string(), 2)],
        "only the rescuer recorded results"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_orchestrator_restarts_without_stuck_tasks() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let mut server = tasker("kill_server", "server1", &db, &["server"], FAST_RECOVERY);
    let _worker = tasker("kill_server", "worker", &db, &["worker"], FAST_RECOVERY);
    let mut tasks = Vec::new();
    for i in 0..30 {
        tasks.push(create(&db, "diamond_workflow", "diamond_math", json!({"value": i})).await);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    server.kill_hard();
    // Results keep arriving while no orchestrator runs.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _server2 = tasker("kill_server", "server2", &db, &["server"], FAST_RECOVERY);
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(wait_for_task(&db.pool, *t, T).await.state, "complete");
        let join = StepRow::find_by_name(&db.pool, *t, "join")
            .await
            .unwrap()
            .unwrap();
        let v = i as i64;
        assert_eq!(join.results, Some(json!(v * v + 10 + v * v * 2)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_handler_times_out_and_worker_keeps_serving() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("hang", "server", &db, &["server"], &[]);
    let _worker = tasker("hang", "worker", &db, &["worker"], &[]);
    let hung = create(&db, "error_scenarios", "handler_timeout", json!({})).await;
    let after = create(&db, "linear_workflow", "linear_math", json!({"value": 6})).await;
    assert_eq!(wait_for_task(&db.pool, hung, T).await.state, "error");
    let step = &StepRow::for_task(&db.pool, hung).await.unwrap()[0];
    let err = step.last_error.as_ref().unwrap();
    assert_eq!(err["error_type"], json!("handler_timeout"));
    assert!(
        err["message"].as_str().unwrap().contains("1000 ms"),
        "{err}"
    );
    assert_eq!(wait_for_task(&db.pool, after, T).await.state, "complete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_worker_and_exits_zero() {
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("sigterm", "server", &db, &["server"], &[]);
    let mut worker = tasker("sigterm", "worker", &db, &["worker"], &[]);
    let task = create(
        &db,
        "sleep_workflow",
        "parallel_sleep",
        json!({"sleep_ms": 800}),
    )
    .await;
    wait_for_steps_in(&db.pool, task, "in_progress", 4, T).await;
    let status = worker
        .terminate(Duration::from_secs(30))
        .expect("worker exits after SIGTERM");
    assert!(status.success(), "{status:?}");
    assert_eq!(
        wait_for_task(&db.pool, task, T).await.state,
        "complete",
        "in-flight steps were finished, not lost"
    );
    for s in StepRow::for_task(&db.pool, task).await.unwrap() {
        assert_eq!(s.attempts, 1);
    }
}
