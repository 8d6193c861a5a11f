//! The worker registry (dead workers found and their steps released at once, live ones never
//! taken for dead) and waiting for tasks woken by the database.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use std::time::{Duration, Instant};
use tasker_shared::models::{reap_dead_workers, ExpiredClaimSweep, ReapedWorker, WorkerRow};
use tasker_shared::TaskWaiter;
use tasker_tests::Harness;
use tower::ServiceExt;
use uuid::Uuid;

const T: Duration = Duration::from_secs(30);

/// A worker that registers, claims the task's enqueued step and then stops existing, as a
/// SIGKILLed process would: its session ends without any shutdown path.
async fn register_and_claim_then_die(h: &Harness, worker_id: &str, task: Uuid) -> Uuid {
    let mut session = PgConnection::connect(&h.db.url).await.unwrap();
    let key: i64 = sqlx::query_scalar("SELECT nextval('tasker.worker_lock_keys')")
        .fetch_one(&mut session)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(key)
        .execute(&mut session)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tasker.workers (worker_id, host, pid, namespaces, lock_key)
         VALUES ($1, 'doomed-host', 4242, ARRAY['linear_workflow'], $2)",
    )
    .bind(worker_id)
    .bind(key)
    .execute(&mut session)
    .await
    .unwrap();
    // Read the message as a worker does (hidden for the 30 s visibility timeout), then claim.
    let msgs: Vec<Value> =
        sqlx::query_scalar("SELECT message FROM pgmq.read('worker_linear_workflow_queue', 30, 10)")
            .fetch_all(&mut session)
            .await
            .unwrap();
    assert_eq!(msgs.len(), 1, "the root step's message");
    let step: Uuid = msgs[0]["step_uuid"].as_str().unwrap().parse().unwrap();
    assert_eq!(msgs[0]["task_uuid"], json!(task.to_string()));
    let outcome: String = sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps($1, $2, 60)")
        .bind(vec![step])
        .bind(worker_id)
        .fetch_one(&mut session)
        .await
        .unwrap();
    assert_eq!(outcome, "claimed");
    let held = WorkerRow::list(&h.db.pool).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].worker_id.as_str(), held[0].steps_held),
        (worker_id, 1)
    );
    session.close().await.unwrap();
    step
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_steps_run_elsewhere_without_waiting_for_the_lease() {
    let h = Harness::orchestration_only(&[]).await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 6}))
        .await;
    let step = register_and_claim_then_die(&h, "doomed", task).await;

    let rescuer = h
        .start_worker(tasker_worker::Dispatch::Rust(
            tasker_worker_rust::example_registry(),
        ))
        .await;
    let start = Instant::now();
    // The lease (60 s) and the message's visibility (30 s) are far longer than this wait.
    assert_eq!(
        h.wait(task, Duration::from_secs(20)).await.state,
        "complete"
    );
    println!(
        "task finished {:.1} s after its worker died",
        start.elapsed().as_secs_f64()
    );
    let reason: Value = sqlx::query_scalar(
        "SELECT metadata FROM tasker.workflow_step_transitions
          WHERE step_uuid = $1 AND from_state = 'in_progress' AND to_state = 'enqueued'",
    )
    .bind(step)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert_eq!(
        reason,
        json!({"reason": "worker_lost", "worker_id": "doomed"})
    );
    let listed: Vec<String> = WorkerRow::list(&h.db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|w| w.worker_id)
        .collect();
    assert_eq!(
        listed,
        std::slice::from_ref(&rescuer.worker_id),
        "the dead worker is gone"
    );
    rescuer.shutdown_within(Duration::from_secs(5)).await;
    assert!(
        WorkerRow::list(&h.db.pool).await.unwrap().is_empty(),
        "a stopped worker leaves the registry"
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_worker_that_loses_its_connection_is_not_taken_for_dead() {
    // A grace period well past the reaping below, so a slow machine cannot fake a death.
    let h = Harness::with_rust_worker(&[(
        "worker.liveness_grace_ms",
        tasker_tests::toml_value::Value::Integer(6000),
    )])
    .await;
    let worker_id = h.worker.as_ref().unwrap().worker_id.clone();
    let lock_holder: i32 = sqlx::query_scalar(
        // pg_locks lists every database's locks, and parallel tests number their keys alike.
        "SELECT l.pid FROM pg_locks l JOIN tasker.workers w ON w.lock_key = l.objid::bigint
          WHERE l.locktype = 'advisory' AND l.granted AND w.worker_id = $1
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind(&worker_id)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    let killed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(lock_holder)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(killed);
    // The worker takes its lock back at its next beat (1 s), long before the grace ends.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        reap(&h).await;
    }
    let listed = WorkerRow::list(&h.db.pool).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].worker_id, worker_id);
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_unseen_past_the_timeout_is_reaped_even_if_its_session_lingers() {
    let mut h = Harness::orchestration_only(&[]).await;
    // This test reaps by hand; the orchestrator's own reaper would race it.
    h.orchestrator
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    let mut session = PgConnection::connect(&h.db.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock(777)")
        .execute(&mut session)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO tasker.workers (worker_id, host, pid, namespaces, lock_key, last_seen_at)
         VALUES ('partitioned', 'h', 1, ARRAY['linear_workflow'], 777, now() - interval '5 minutes')",
    )
    .execute(&mut session)
    .await
    .unwrap();
    let reaped = reap(&h).await;
    assert_eq!(reaped.len(), 1);
    assert_eq!(reaped[0].worker_id, "partitioned");
    assert!(WorkerRow::list(&h.db.pool).await.unwrap().is_empty());
    // Recent and locked: alive.
    sqlx::query(
        "INSERT INTO tasker.workers (worker_id, host, pid, namespaces, lock_key)
         VALUES ('alive', 'h', 1, ARRAY['linear_workflow'], 777)",
    )
    .execute(&mut session)
    .await
    .unwrap();
    sqlx::query("UPDATE tasker.workers SET last_seen_at = now() - interval '3 seconds'")
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert!(reap(&h).await.is_empty());
    session.close().await.unwrap();
    h.shutdown().await;
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_wait_returns_when_the_task_finishes_and_lists_workers() {
    let h = Harness::with_rust_worker(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());

    let (s, v) = get(&app, "/v1/workers").await;
    assert_eq!(s, StatusCode::OK);
    let workers = v["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 1, "{v}");
    let w = &workers[0];
    assert_eq!(w["worker_id"], json!(h.worker.as_ref().unwrap().worker_id));
    assert_eq!(w["pid"], json!(std::process::id()));
    for field in [
        "host",
        "namespaces",
        "started_at",
        "last_seen_at",
        "steps_held",
    ] {
        assert!(!w[field].is_null(), "{field} in {w}");
    }

    let task = h
        .create("sleep_workflow", "parallel_sleep", json!({"sleep_ms": 300}))
        .await;
    let (s, v) = get(&app, &format!("/v1/tasks/{task}?wait_seconds=30")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["task"]["state"], json!("complete"), "{v}");

    let (s, v) = get(&app, &format!("/v1/tasks/{task}?wait_seconds=61")).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["error"]["field"], json!("wait_seconds"), "{v}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_an_unfinished_task_returns_after_its_timeout() {
    let h = Harness::orchestration_only(&[]).await;
    let app = tasker_orchestration::api::router(h.core.clone());
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    let asked = Instant::now();
    let (s, v) = get(&app, &format!("/v1/tasks/{task}?wait_seconds=1")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        asked.elapsed() >= Duration::from_millis(900),
        "the request waited for its timeout"
    );
    assert_ne!(v["task"]["state"], json!("complete"), "no worker runs: {v}");
    let (s, _) = get(&app, &format!("/v1/tasks/{}?wait_seconds=1", Uuid::nil())).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_waiters_share_one_listening_connection_and_all_wake() {
    let h = Harness::with_rust_worker(&[]).await;
    // A slow fallback, so that only notifications can finish these waits in time.
    let waiter = TaskWaiter::new(
        h.db.pool.clone(),
        Duration::from_secs(600),
        Duration::from_millis(200),
    );
    let mut tasks = Vec::new();
    for i in 0..200 {
        tasks.push(
            h.create("linear_workflow", "linear_math", json!({"value": i}))
                .await,
        );
    }
    let waits: Vec<_> = tasks
        .iter()
        .map(|t| {
            let w = waiter.clone();
            let t = *t;
            tokio::spawn(async move { w.wait(t, Duration::from_secs(60)).await })
        })
        .collect();
    let start = Instant::now();
    let mut listeners = 0;
    while start.elapsed() < Duration::from_secs(2) {
        listeners = listeners.max(listening_connections(&h).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for w in waits {
        let state = w.await.unwrap().unwrap();
        assert_eq!(state.map(|s| s.to_string()), Some("complete".to_string()));
    }
    // The orchestrator's own REST waiter has not been used, so this process listens once.
    assert_eq!(listeners, 1, "one listening connection for 200 waiters");
    assert_eq!(waiter.watched(), 0, "finished waits unregister");
    h.shutdown().await;
}

async fn listening_connections(h: &Harness) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND query ILIKE 'LISTEN%tasker_task_finished%'",
    )
    .fetch_one(&h.db.pool)
    .await
    .unwrap()
}

/// One run of the reaper, as the orchestrator's and every worker's make it.
async fn reap(h: &Harness) -> Vec<ReapedWorker> {
    reap_dead_workers(
        &h.db.pool,
        &h.core.queues,
        &h.config.worker,
        &ExpiredClaimSweep::new(&h.config.worker),
        "test",
    )
    .await
    .unwrap()
}
