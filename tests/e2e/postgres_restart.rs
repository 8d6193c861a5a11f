//! PostgreSQL restarted mid-run: every process reconnects by itself and all tasks complete.
//! This is the only test in its binary, so it never pulls the database from under another.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{pg_ctlcluster, tasker, FAST_RECOVERY};
use tasker_orchestration::{TaskInitializer, TaskRequest};
use tasker_tests::testing::TestDatabase;
use tasker_tests::{register_examples, wait_for_task};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_survive_a_postgres_restart() {
    if !support::can_control_postgres() {
        eprintln!("pg_ctlcluster is not available: this machine cannot restart its Postgres; nothing to test");
        return;
    }
    let db = TestDatabase::new().await;
    register_examples(&db).await;
    let _server = tasker("pg_restart", "server", &db, &["server"], FAST_RECOVERY);
    let _worker = tasker("pg_restart", "worker", &db, &["worker"], FAST_RECOVERY);
    let backoff = tasker_tests::config_for(&db, &[]).backoff;
    let init = TaskInitializer::new(db.pool.clone(), backoff);
    let mut tasks = Vec::new();
    for i in 0..20 {
        let req = TaskRequest {
            namespace: "sleep_workflow".into(),
            name: "parallel_sleep".into(),
            version: "1.0.0".into(),
            context: json!({"sleep_ms": 100 + i}),
            idempotency_key: None,
            initiator: None,
            run_at: None,
        };
        tasks.push(init.create_task(&req).await.unwrap().task_uuid);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(pg_ctlcluster("restart"), "restarting PostgreSQL failed");
    for t in tasks {
        assert_eq!(
            wait_for_task(&db.pool, t, Duration::from_secs(120))
                .await
                .state,
            "complete"
        );
    }
}
