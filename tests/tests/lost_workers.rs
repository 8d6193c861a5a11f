//! A lost claim counts as an attempt. On a step's last attempt, losing its worker (the
//! reaper finds the worker dead, or a claim finds the lease expired) fails the step for good
//! (`worker_lost`) and blocks its task; the step is then a dead letter, listed by the REST
//! API and the dashboard, and a reset runs it again. Earlier attempts go back to the queue,
//! with a new message: a claim deletes its step's message. A lease that runs out while its
//! worker still lives is released the same way (`release_expired_claims`).

use serde_json::{json, Value};
use tasker_shared::models::StepRow;
use tasker_tests::{http, Harness};
use uuid::Uuid;

/// A linear task whose first step is held by `worker` on attempt `attempt`, its lease ending
/// `lease_ms` from now (negative: expired), its message deleted and the claim noted
/// (`tasker.step_claims`) as a claim does.
async fn held_step(h: &Harness, worker: &str, attempt: i32, lease_ms: i64) -> (Uuid, Uuid) {
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 3}))
        .await;
    let step: Uuid = sqlx::query_scalar(
        "UPDATE tasker.workflow_steps
            SET state = 'in_progress', claim_owner = $2, attempts = $3,
                lease_expires_at = clock_timestamp() + make_interval(secs => $4 / 1000.0),
                started_at = clock_timestamp()
          WHERE task_uuid = $1 AND state = 'enqueued'
         RETURNING step_uuid",
    )
    .bind(task)
    .bind(worker)
    .bind(attempt)
    .bind(lease_ms as f64)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    sqlx::query("DELETE FROM pgmq.q_worker_linear_workflow_queue WHERE message->>'step_uuid' = $1")
        .bind(step.to_string())
        .execute(&h.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "SELECT tasker.note_claims($2, ARRAY[$1::uuid],
                                   clock_timestamp() + make_interval(secs => $3 / 1000.0))",
    )
    .bind(step)
    .bind(worker)
    .bind(lease_ms as f64)
    .execute(&h.db.pool)
    .await
    .unwrap();
    (task, step)
}

/// The step's messages in its queue, with the attempt each announces.
async fn messages(h: &Harness, step: Uuid) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT (message->>'attempt')::bigint FROM pgmq.q_worker_linear_workflow_queue
          WHERE message->>'step_uuid' = $1",
    )
    .bind(step.to_string())
    .fetch_all(&h.db.pool)
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

async fn step(h: &Harness, step: Uuid) -> StepRow {
    sqlx::query_as("SELECT * FROM tasker.step_rows WHERE step_uuid = $1")
        .bind(step)
        .fetch_one(&h.db.pool)
        .await
        .unwrap()
}

/// A registered worker whose process is gone: its advisory lock is free and it has not been
/// seen for a while.
async fn dead_worker(h: &Harness, id: &str) {
    sqlx::query(
        "INSERT INTO tasker.workers (worker_id, host, pid, namespaces, last_seen_at)
         VALUES ($1, 'gone', 1, ARRAY['linear_workflow'], clock_timestamp() - interval '5 seconds')",
    )
    .bind(id)
    .execute(&h.db.pool)
    .await
    .unwrap();
}

/// Reaps dead workers (the orchestrator's own reaper may get there first: either way the
/// worker is gone once this returns).
async fn reap(h: &Harness, worker: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        sqlx::query("SELECT * FROM tasker.reap_dead_workers(500, 30000, 'test')")
            .execute(&h.db.pool)
            .await
            .unwrap();
        let left: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasker.workers WHERE worker_id = $1)")
                .bind(worker)
                .fetch_one(&h.db.pool)
                .await
                .unwrap();
        if !left {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker {worker} never reaped"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_reaper_fails_a_step_lost_on_its_last_attempt_and_requeues_earlier_ones() {
    let h = Harness::orchestration_only(&[]).await;
    let (last_task, last) = held_step(&h, "w-dead", 3, 60_000).await;
    let (early_task, early) = held_step(&h, "w-dead", 1, 60_000).await;
    dead_worker(&h, "w-dead").await;
    reap(&h, "w-dead").await;

    let failed = step(&h, last).await;
    assert_eq!((failed.state.as_str(), failed.attempts), ("error", 3));
    let error = failed.last_error.unwrap();
    assert_eq!(
        (
            &error["error_type"],
            &error["retryable"],
            &error["worker_id"]
        ),
        (&json!("worker_lost"), &json!(false), &json!("w-dead"))
    );
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("attempt 3 of 3"),
        "{error}"
    );
    assert_eq!(task_state(&h, last_task).await, "error");

    let requeued = step(&h, early).await;
    assert_eq!(
        (requeued.state.as_str(), requeued.attempts),
        ("enqueued", 1)
    );
    assert_eq!(task_state(&h, early_task).await, "steps_in_process");
    assert_eq!(
        messages(&h, early).await,
        [2],
        "a new message for the next attempt"
    );
    assert!(messages(&h, last).await.is_empty());
}

#[tokio::test]
async fn a_lease_that_runs_out_under_a_live_worker_is_released_with_a_new_message() {
    let h = Harness::orchestration_only(&[]).await;
    let (last_task, last) = held_step(&h, "w-alive", 3, -1000).await;
    let (early_task, early) = held_step(&h, "w-alive", 1, -1000).await;
    let (_, held) = held_step(&h, "w-alive", 1, 60_000).await;
    // The orchestrator's reaper runs this too; whichever comes first, each step is
    // released once.
    sqlx::query("SELECT * FROM tasker.release_expired_claims('test', 100)")
        .execute(&h.db.pool)
        .await
        .unwrap();

    let failed = step(&h, last).await;
    assert_eq!(failed.state, "error");
    assert_eq!(failed.last_error.unwrap()["error_type"], "worker_lost");
    assert_eq!(task_state(&h, last_task).await, "error");
    assert!(messages(&h, last).await.is_empty());

    let requeued = step(&h, early).await;
    assert_eq!(
        (requeued.state.as_str(), requeued.claim_owner.as_deref()),
        ("enqueued", None)
    );
    assert_eq!(task_state(&h, early_task).await, "steps_in_process");
    assert_eq!(messages(&h, early).await, [2]);
    let reason: Value = sqlx::query_scalar(
        "SELECT metadata FROM tasker.workflow_step_transitions
          WHERE step_uuid = $1 AND most_recent",
    )
    .bind(early)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        reason,
        json!({"reason": "lease_expired", "worker_id": "w-alive"})
    );

    assert_eq!(
        step(&h, held).await.state,
        "in_progress",
        "a live lease stays"
    );
    assert!(messages(&h, held).await.is_empty());
}

#[tokio::test]
async fn a_claim_that_finds_a_lease_expired_on_the_last_attempt_fails_the_step() {
    let h = Harness::orchestration_only(&[]).await;
    let (task, lost) = held_step(&h, "w-gone", 3, -1000).await;
    let (again_task, again) = held_step(&h, "w-gone", 1, -1000).await;
    let outcomes: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT step_uuid, outcome FROM tasker.claim_steps(ARRAY[$1, $2]::uuid[], 'w-next', 30)",
    )
    .bind(lost)
    .bind(again)
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let outcome = |s: Uuid| outcomes.iter().find(|(id, _)| *id == s).unwrap().1.clone();
    assert_eq!(outcome(lost), "finished");
    assert_eq!(outcome(again), "claimed");

    let failed = step(&h, lost).await;
    assert_eq!(failed.state, "error");
    assert_eq!(failed.last_error.unwrap()["worker_id"], "w-gone");
    assert_eq!(task_state(&h, task).await, "error");
    let claimed = step(&h, again).await;
    assert_eq!(
        (claimed.state.as_str(), claimed.attempts),
        ("in_progress", 2)
    );
    assert_eq!(task_state(&h, again_task).await, "steps_in_process");
}

#[tokio::test]
async fn dead_letters_are_listed_by_the_api_and_the_dashboard_and_a_reset_runs_them_again() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let (task, lost) = held_step(&h, "w-dead", 3, 60_000).await;
    held_step(&h, "w-other", 1, 60_000).await;
    dead_worker(&h, "w-dead").await;
    reap(&h, "w-dead").await;

    let (status, body) = http(&app, "GET", "/v1/dead_letters", None).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let dead = body["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{body}");
    assert_eq!(dead[0]["step_uuid"], lost.to_string());
    assert_eq!(dead[0]["task_name"], "linear_math");
    assert_eq!(dead[0]["error"]["error_type"], "worker_lost");
    let (status, _) = http(&app, "GET", "/v1/dead_letters?limit=0", None).await;
    assert_eq!(status, 422);
    let (status, _) = http(&app, "GET", "/v1/dead_letters?offset=100000000", None).await;
    assert_eq!(status, 422);

    let name = step(&h, lost).await.name;
    let (status, page) = http(&app, "GET", "/ui/failures", None).await;
    assert_eq!(status, 200);
    let row = format!(
        r#"data-task-uuid="{task}" data-step-name="{name}" data-step-state="error" data-error-type="worker_lost""#
    );
    assert!(page.contains(&row), "{page}");

    let (status, body) = http(
        &app,
        "PATCH",
        &format!("/v1/tasks/{task}/steps/{name}"),
        Some(json!({"action": "reset"}).to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(step(&h, lost).await.state, "error");
    let (_, body) = http(&app, "GET", "/v1/dead_letters", None).await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["dead_letters"],
        json!([])
    );
}

/// The reaper wakes the waiters of a task it failed, rather than leaving them to their
/// fallback poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_the_reaper_fails_wakes_its_waiters() {
    let h = Harness::orchestration_only(&[]).await;
    let (task, _) = held_step(&h, "w-gone", 3, 60_000).await;
    // A fallback poll far beyond the wait: only the notification can end it in time.
    let waiter = tasker_shared::TaskWaiter::new(
        h.db.pool.clone(),
        std::time::Duration::from_secs(600),
        std::time::Duration::from_millis(200),
    );
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move { waiter.wait(task, std::time::Duration::from_secs(15)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    dead_worker(&h, "w-gone").await;
    let started = std::time::Instant::now();
    tasker_shared::models::reap_dead_workers(
        &h.db.pool,
        &h.core.queues,
        &h.config.worker,
        &tasker_shared::models::ExpiredClaimSweep::new(&h.config.worker),
        "test",
    )
    .await
    .unwrap();
    let state = waiting.await.unwrap().unwrap();
    assert_eq!(
        state.map(|s| s.as_str().to_string()),
        Some("error".to_string()),
        "woken after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "woken only after {:?}",
        started.elapsed()
    );
}
