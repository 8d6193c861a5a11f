//! Scheduled tasks (`run_at`): no step of the task starts before that time, whichever way
//! its messages are read, and it runs as usual after it.

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use std::time::Duration;
use tasker_orchestration::TaskRequest;
use tasker_shared::models::TaskRow;
use tasker_tests::{http, Harness};
use uuid::Uuid;

fn linear(run_at: Option<DateTime<Utc>>) -> TaskRequest {
    TaskRequest {
        namespace: "linear_workflow".into(),
        name: "linear_math".into(),
        version: "1.0.0".into(),
        context: serde_json::json!({ "value": 6 }),
        idempotency_key: None,
        initiator: Some("test".into()),
        run_at,
    }
}

#[tokio::test]
async fn a_scheduled_task_starts_no_step_before_its_run_at_and_completes_after() {
    let h = Harness::with_rust_worker(&[]).await;
    let run_at = Utc::now() + ChronoDuration::milliseconds(2500);
    let created = h
        .core
        .initializer
        .create_task(&linear(Some(run_at)))
        .await
        .unwrap();
    let task = TaskRow::get(&h.db.pool, created.task_uuid).await.unwrap();
    assert_eq!(
        task.run_at.map(|t| t.timestamp_millis()),
        Some(run_at.timestamp_millis())
    );

    // A worker is running and polling; until run_at nothing is claimed.
    while Utc::now() < run_at - ChronoDuration::milliseconds(300) {
        let started = h
            .steps(created.task_uuid)
            .await
            .into_iter()
            .filter(|s| s.attempts > 0 || s.started_at.is_some())
            .count();
        assert_eq!(started, 0, "a step started before the task's run_at");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let done = h.wait(created.task_uuid, Duration::from_secs(30)).await;
    assert_eq!(done.state, "complete");
    let first_start = h
        .steps(created.task_uuid)
        .await
        .into_iter()
        .filter_map(|s| s.started_at)
        .min()
        .unwrap();
    assert!(
        first_start >= run_at,
        "first step started at {first_start}, before run_at {run_at}"
    );
}

#[tokio::test]
async fn claims_answer_scheduled_until_run_at_even_for_a_visible_message() {
    let h = Harness::orchestration_only(&[]).await;
    let run_at = Utc::now() + ChronoDuration::hours(1);
    let created = h
        .core
        .initializer
        .create_task(&linear(Some(run_at)))
        .await
        .unwrap();
    let root: Uuid = sqlx::query_scalar(
        "SELECT step_uuid FROM tasker.workflow_steps WHERE task_uuid = $1 AND state = 'enqueued'",
    )
    .bind(created.task_uuid)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();

    // Its message is hidden until run_at.
    let vt: DateTime<Utc> = sqlx::query_scalar(
        "SELECT vt FROM pgmq.q_worker_linear_workflow_queue WHERE message->>'step_uuid' = $1::text",
    )
    .bind(root)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(vt >= run_at - ChronoDuration::milliseconds(1), "vt {vt}");

    // Made visible anyway (as a dead worker's reaper does), it is still not claimed.
    let (outcome, until): (String, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT outcome, lease_expires_at FROM tasker.claim_steps(ARRAY[$1]::uuid[], 'w1', 30)",
    )
    .bind(root)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(outcome, "scheduled");
    assert_eq!(
        until.map(|t| t.timestamp_millis()),
        Some(run_at.timestamp_millis())
    );

    // Once its time has come it is claimed as any other.
    sqlx::query("UPDATE tasker.tasks SET run_at = clock_timestamp() WHERE task_uuid = $1")
        .bind(created.task_uuid)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let outcome: String =
        sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps(ARRAY[$1]::uuid[], 'w1', 30)")
            .bind(root)
            .fetch_one(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(outcome, "claimed");
}

#[tokio::test]
async fn a_run_at_in_the_past_runs_at_once() {
    let h = Harness::with_rust_worker(&[]).await;
    let created = h
        .core
        .initializer
        .create_task(&linear(Some(Utc::now() - ChronoDuration::minutes(5))))
        .await
        .unwrap();
    let done = h.wait(created.task_uuid, Duration::from_secs(30)).await;
    assert_eq!(done.state, "complete");
    assert!(done.run_at.is_some());
}

#[tokio::test]
async fn the_rest_api_takes_run_at_and_the_dashboard_shows_it() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let body = serde_json::json!({
        "namespace": "linear_workflow", "name": "linear_math", "version": "1.0.0",
        "context": {"value": 2}, "run_at": "2099-01-02T03:04:05Z"
    });
    let (status, created) = http(&app, "POST", "/v1/tasks", Some(body.to_string())).await;
    assert_eq!(status, 201, "{created}");
    let id = serde_json::from_str::<serde_json::Value>(&created).unwrap()["task_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, task) = http(&app, "GET", &format!("/v1/tasks/{id}"), None).await;
    assert_eq!(status, 200, "{task}");
    let task: serde_json::Value = serde_json::from_str(&task).unwrap();
    assert_eq!(task["task"]["run_at"], "2099-01-02T03:04:05Z");
    assert!(task["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["attempts"] == 0));

    let bad = serde_json::json!({
        "namespace": "linear_workflow", "name": "linear_math", "version": "1.0.0",
        "context": {"value": 2}, "run_at": "next tuesday"
    });
    let (status, refused) = http(&app, "POST", "/v1/tasks", Some(bad.to_string())).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.contains("run_at"), "{refused}");
    let ancient = serde_json::json!({
        "namespace": "linear_workflow", "name": "linear_math", "version": "1.0.0",
        "context": {"value": 2}, "run_at": "-5000-01-01T00:00:00Z"
    });
    let (status, refused) = http(&app, "POST", "/v1/tasks", Some(ancient.to_string())).await;
    assert_eq!(status, 422, "{refused}");
    assert!(refused.contains("year 1"), "{refused}");

    let (status, page) = http(&app, "GET", &format!("/ui/tasks/{id}"), None).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("Scheduled for"), "{page}");
    assert!(page.contains("data-run-at=\"2099-01-02"), "{page}");
    assert!(page.contains("no step starts before then"), "{page}");
}
