//! PostgreSQL down for longer than liveness_grace_ms while steps run: every advisory lock is
//! gone when it comes back, so a lock-based reaper would take every worker for dead and run
//! its steps again. Workers that reconnect within liveness_timeout_ms keep their claims: no
//! step runs twice and every task completes. The only test in its binary, so it never pulls
//! the database from under another.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{pg_ctlcluster, tasker};
use tasker_shared::models::StepRow;
use tasker_tests::testing::TestDatabase;
use tasker_tests::{register_examples, wait_for_task};

const ENV: &[(&str, &str)] = &[
    ("TASKER_WORKER__LIVENESS_GRACE_MS", "500"),
    ("TASKER_WORKER__LIVENESS_INTERVAL_MS", "200"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_come_back_after_an_outage_keep_their_steps() {
    if !support::can_control_postgres() {
        eprintln!("pg_ctlcluster is not available: this machine cannot stop its Postgres; nothing to test");
        return;
    }
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("pg_outage", "server", &db, &["server"], ENV);
    let _a = tasker(
        "pg_outage",
        "worker-a",
        &db,
        &["worker", "-n", "sleep_workflow"],
        ENV,
    );
    let _b = tasker(
        "pg_outage",
        "worker-b",
        &db,
        &["worker", "-n", "sleep_workflow"],
        ENV,
    );
    let mut tasks = Vec::new();
    for i in 0..8 {
        tasks.push(
            support::create(
                &db,
                "sleep_workflow",
                "parallel_sleep",
                json!({"sleep_ms": 4000 + i}),
            )
            .await,
        );
    }
    // Let the workers claim the steps, then take the database away for several grace periods.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(pg_ctlcluster("stop"), "stopping PostgreSQL failed");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(pg_ctlcluster("start"), "starting PostgreSQL failed");

    for &t in &tasks {
        let task = wait_for_task(&db.pool, t, Duration::from_secs(120)).await;
        assert_eq!(task.state, "complete", "task {t}");
    }
    for &t in &tasks {
        for step in StepRow::for_task(&db.pool, t).await.unwrap() {
            assert_eq!(
                step.attempts, 1,
                "step {} of task {t} ran {} times: its worker was taken for dead",
                step.name, step.attempts
            );
        }
    }
    let released: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_step_transitions
          WHERE to_state = 'enqueued' AND metadata->>'reason' = 'worker_lost'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(released, 0, "steps released from live workers");
}
