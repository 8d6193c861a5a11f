//! get_step_readiness_status and get_task_execution_context, state by state.

use std::collections::HashMap;
use tasker_shared::models::{ExecutionStatus, StepReadiness, TaskExecutionContext};
use tasker_shared::testing::TestDatabase;
use uuid::Uuid;

/// A task whose steps and edges are given as (name, parents).
async fn task(db: &TestDatabase, steps: &[(&str, &[&str])]) -> (Uuid, HashMap<String, Uuid>) {
    let ns: Uuid = sqlx::query_scalar("INSERT INTO tasker.namespaces (name) VALUES ('ns') ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING namespace_uuid")
        .fetch_one(&db.pool).await.unwrap();
    let nt: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.named_tasks (namespace_uuid, name, version, template) VALUES ($1, 't', '1', '{}')
         ON CONFLICT (namespace_uuid, name, version) DO UPDATE SET name = excluded.name RETURNING named_task_uuid",
    ).bind(ns).fetch_one(&db.pool).await.unwrap();
    let task: Uuid = sqlx::query_scalar(
        "INSERT INTO tasker.tasks (named_task_uuid) VALUES ($1) RETURNING task_uuid",
    )
    .bind(nt)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let mut ids = HashMap::new();
    for (i, (name, parents)) in steps.iter().enumerate() {
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO tasker.workflow_steps (task_uuid, name, position, handler_callable, max_attempts, retryable, backoff, backoff_base_ms, max_backoff_ms)
             VALUES ($1, $2, $3, 'X', 3, true, 'none', 0, 0) RETURNING step_uuid",
        ).bind(task).bind(name).bind(i as i32).fetch_one(&db.pool).await.unwrap();
        for p in *parents {
            sqlx::query("INSERT INTO tasker.workflow_step_edges (task_uuid, from_step_uuid, to_step_uuid) VALUES ($1, $2, $3)")
                .bind(task).bind(ids[*p]).bind(id).execute(&db.pool).await.unwrap();
        }
        ids.insert(name.to_string(), id);
    }
    (task, ids)
}

async fn set(
    db: &TestDatabase,
    step: Uuid,
    state: &str,
    attempts: i32,
    retryable: bool,
    retry_in_ms: Option<i64>,
) {
    sqlx::query(
        "UPDATE tasker.workflow_steps SET state = $2, attempts = $3, retryable = $4,
                next_retry_at = CASE WHEN $5::bigint IS NULL THEN NULL ELSE clock_timestamp() + make_interval(secs => $5::bigint / 1000.0) END,
                last_error = CASE WHEN $2 IN ('error', 'waiting_for_retry') THEN '{\"message\": \"failed\"}'::jsonb END
          WHERE step_uuid = $1",
    ).bind(step).bind(state).bind(attempts).bind(retryable).bind(retry_in_ms).execute(&db.pool).await.unwrap();
}

async fn status(db: &TestDatabase, task: Uuid) -> TaskExecutionContext {
    TaskExecutionContext::fetch(&db.pool, task).await.unwrap()
}

const DIAMOND: &[(&str, &[&str])] = &[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])];

#[tokio::test]
async fn fresh_task_has_ready_root_only() {
    let db = TestDatabase::new().await;
    let (t, _) = task(&db, DIAMOND).await;
    let ctx = status(&db, t).await;
    assert_eq!(ctx.execution_status, ExecutionStatus::HasReadySteps);
    assert_eq!(
        (ctx.total_steps, ctx.ready_steps, ctx.pending_steps),
        (4, 1, 4)
    );
    assert_eq!(ctx.recommended_action, "execute_ready_steps");
    let r = StepReadiness::for_task(&db.pool, t).await.unwrap();
    assert_eq!(
        r.iter()
            .filter(|s| s.ready_for_execution)
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(r[3].total_parents, 2);
    assert!(!r[3].dependencies_satisfied);
}

#[tokio::test]
async fn processing_then_waiting_then_all_complete() {
    let db = TestDatabase::new().await;
    let (t, s) = task(&db, &[("a", &[]), ("b", &["a"])]).await;
    set(&db, s["a"], "in_progress", 1, true, None).await;
    assert_eq!(
        status(&db, t).await.execution_status,
        ExecutionStatus::Processing
    );
    set(&db, s["a"], "complete", 1, true, None).await;
    assert_eq!(
        status(&db, t).await.execution_status,
        ExecutionStatus::HasReadySteps
    );
    set(&db, s["b"], "enqueued_for_orchestration", 1, true, None).await;
    assert_eq!(
        status(&db, t).await.execution_status,
        ExecutionStatus::Processing
    );
    set(&db, s["b"], "complete", 1, true, None).await;
    let ctx = status(&db, t).await;
    assert_eq!(ctx.execution_status, ExecutionStatus::AllComplete);
    assert_eq!(ctx.completed_steps, 2);
    assert_eq!(ctx.recommended_action, "finalize_task");
}

#[tokio::test]
async fn resolved_manually_parent_satisfies_child() {
    let db = TestDatabase::new().await;
    let (t, s) = task(&db, &[("a", &[]), ("b", &["a"])]).await;
    set(&db, s["a"], "resolved_manually", 1, true, None).await;
    let r = StepReadiness::for_task(&db.pool, t).await.unwrap();
    assert!(r[1].ready_for_execution);
}

#[tokio::test]
async fn permanent_failure_beside_ready_step_is_blocked_not_ready() {
    // The regression from the seed: a CASE that checked ready steps first reported this
    // task as has_ready_steps and kept feeding it work.
    let db = TestDatabase::new().await;
    let (t, s) = task(&db, DIAMOND).await;
    set(&db, s["a"], "complete", 1, true, None).await;
    set(&db, s["b"], "error", 1, false, None).await;
    let ctx = status(&db, t).await;
    assert_eq!(ctx.ready_steps, 1, "c is ready");
    assert_eq!(ctx.permanently_blocked_steps, 1);
    assert_eq!(ctx.execution_status, ExecutionStatus::BlockedByFailures);
    assert_eq!(ctx.health_status, "blocked");
    assert_eq!(ctx.recommended_action, "handle_failures");
}

#[tokio::test]
async fn out_of_attempts_waiting_step_is_blocked() {
    let db = TestDatabase::new().await;
    let (t, s) = task(&db, &[("a", &[])]).await;
    set(&db, s["a"], "waiting_for_retry", 3, true, None).await;
    assert_eq!(
        status(&db, t).await.execution_status,
        ExecutionStatus::BlockedByFailures
    );
}

#[tokio::test]
async fn retryable_failure_with_attempts_left_is_not_blocked() {
    let db = TestDatabase::new().await;
    let (t, s) = task(&db, &[("a", &[])]).await;
    set(&db, s["a"], "waiting_for_retry", 1, true, None).await;
    let ctx = status(&db, t).await;
    assert_eq!(ctx.execution_status, ExecutionStatus::HasReadySteps);
    assert_eq!(ctx.health_status, "recovering");
}

#[tokio::test]
async fn step_in_backoff_is_not_ready() {
    let db = TestDatabase::new().await;
    let (t, s) = task(&db, &[("a", &[])]).await;
    set(&db, s["a"], "waiting_for_retry", 1, true, Some(60_000)).await;
    let ctx = status(&db, t).await;
    assert_eq!(ctx.ready_steps, 0);
    assert_eq!(
        ctx.execution_status,
        ExecutionStatus::WaitingForDependencies
    );
    let r = StepReadiness::for_task(&db.pool, t).await.unwrap();
    assert!(r[0].retry_eligible && !r[0].ready_for_execution && r[0].next_retry_at.is_some());
    // Once the backoff has passed it is ready again.
    set(&db, s["a"], "waiting_for_retry", 1, true, Some(-1)).await;
    assert_eq!(
        status(&db, t).await.execution_status,
        ExecutionStatus::HasReadySteps
    );
}

#[tokio::test]
async fn non_retryable_step_that_never_ran_is_ready() {
    let db = TestDatabase::new().await;
    let (t, s) = task(&db, &[("a", &[])]).await;
    set(&db, s["a"], "pending", 0, false, None).await;
    assert_eq!(status(&db, t).await.ready_steps, 1);
}
