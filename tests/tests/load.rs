//! Load: 1,000 diamond tasks submitted at once all complete, none stuck, and each step's
//! result recorded exactly once.

use serde_json::json;
use std::time::Duration;
use tasker_orchestration::TaskRequest;
use tasker_tests::Harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_diamonds_at_once() {
    let h = Harness::with_rust_worker(&[(
        "database.max_connections",
        tasker_tests::toml_value::Value::Integer(20),
    )])
    .await;
    let requests: Vec<TaskRequest> = (0..1000)
        .map(|i| TaskRequest {
            namespace: "diamond_workflow".into(),
            name: "diamond_math".into(),
            version: "1.0.0".into(),
            context: json!({"value": i % 50}),
            idempotency_key: Some(format!("load-{i}")),
            initiator: Some("load-test".into()),
            run_at: None,
        })
        .collect();
    let created =
        futures::future::join_all(requests.iter().map(|r| h.core.initializer.create_task(r))).await;
    let ids: Vec<uuid::Uuid> = created.into_iter().map(|c| c.unwrap().task_uuid).collect();
    assert_eq!(ids.len(), 1000);

    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasker.tasks WHERE state <> 'complete'")
                .fetch_one(&h.db.pool)
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{open} tasks still not complete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (audits, distinct, steps): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM tasker.step_result_audits),
                (SELECT count(DISTINCT step_uuid) FROM tasker.step_result_audits),
                (SELECT count(*) FROM tasker.workflow_steps WHERE state = 'complete' AND attempts = 1)",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!((audits, distinct, steps), (4000, 4000, 4000));
    let wrong: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM tasker.workflow_steps s JOIN tasker.tasks t USING (task_uuid)
          WHERE s.name = 'join' AND s.results <> to_jsonb(((t.context->>'value')::int ^ 2 * 3 + 10)::int)",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(wrong, 0, "every join is value^2 + 10 + value^2 * 2");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pgmq.q_worker_diamond_workflow_queue")
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "no message left behind");
    h.shutdown().await;
}
