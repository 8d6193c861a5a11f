//! The worker core against the real database: claims, leases, domain-event ordering,
//! malformed messages, configuration and graceful shutdown.

use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::config::ResultsVia;
use tasker_shared::models::StepRow;
use tasker_shared::queue::{worker_queue, QueueClient};
use tasker_shared::StepExecutionResult;
use tasker_tests::toml_value::Value as Toml;
use tasker_tests::Harness;
use tasker_worker::{
    CompletedStep, CompletionProcessorService, CompletionSettings, Dispatch, DispatchedStep,
    InFlight, PostHandlerCallback, RecordOutcome, WorkerCore, WorkerOptions,
};

const T: Duration = Duration::from_secs(30);

/// Fails the test if it ever sees a step whose result is not yet recorded.
struct RecordedBeforeCallback {
    pool: sqlx::PgPool,
    checked: Arc<std::sync::atomic::AtomicUsize>,
}

#[async_trait::async_trait]
impl PostHandlerCallback for RecordedBeforeCallback {
    async fn on_handler_complete(&self, step: &DispatchedStep, _: &StepExecutionResult) {
        let recorded: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tasker.step_result_audits WHERE step_uuid = $1 AND attempt = $2)")
            .bind(step.context.step_uuid)
            .bind(step.context.attempt)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        assert!(recorded, "callback ran before the result was recorded");
        self.checked
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn name(&self) -> &str {
        "recorded_before_callback"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_events_only_follow_recorded_results() {
    let mut h = Harness::orchestration_only(&[]).await;
    let checked = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let worker = WorkerCore::start(
        h.db.pool.clone(),
        &h.config,
        WorkerOptions {
            namespaces: vec!["ecommerce".into()],
            dispatch: Dispatch::Rust(tasker_worker_rust::example_registry()),
            worker_id: None,
            callbacks: vec![Arc::new(RecordedBeforeCallback {
                pool: h.db.pool.clone(),
                checked: checked.clone(),
            })],
        },
    )
    .await
    .unwrap();
    let mut events = worker.subscribe();
    let pool = h.db.pool.clone();
    let observer = tokio::spawn(async move {
        let mut seen = 0;
        while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            let state: String =
                sqlx::query_scalar("SELECT state FROM tasker.workflow_steps WHERE step_uuid = $1")
                    .bind(e.step_uuid)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_ne!(
                state, "in_progress",
                "event {} seen before its result",
                e.name
            );
            seen += 1;
            if seen == 6 {
                break;
            }
        }
        seen
    });
    h.worker = Some(worker);
    for i in 0..3 {
        let t = h
            .create(
                "ecommerce",
                "order_fulfillment",
                json!({"order_id": i, "items": [{"sku": "x", "quantity": 1, "price": 1.0}]}),
            )
            .await;
        assert_eq!(h.wait(t, T).await.state, "complete");
    }
    assert_eq!(
        observer.await.unwrap(),
        6,
        "order.validated and payment.processed for each of 3 orders"
    );
    // A task is complete once its last result is recorded, which can be before that result's
    // callbacks have run; a worker's shutdown waits for them.
    h.shutdown().await;
    assert_eq!(checked.load(std::sync::atomic::Ordering::SeqCst), 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_result_after_lease_loss_is_refused() {
    late_result_is_refused(ResultsVia::Direct).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_result_for_the_orchestrator_after_lease_loss_is_refused() {
    late_result_is_refused(ResultsVia::Orchestration).await;
}

async fn late_result_is_refused(via: ResultsVia) {
    let h = Harness::orchestration_only(&[]).await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    let step = h
        .steps(task)
        .await
        .into_iter()
        .find(|s| s.name == "add_two")
        .unwrap();
    let claim = |worker: &'static str| {
        let pool = h.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT outcome FROM tasker.claim_steps($1, $2, 60)")
                .bind(vec![step.step_uuid])
                .bind(worker)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(claim("w1").await, "claimed");
    assert_eq!(claim("w2").await, "busy", "a live lease is respected");
    sqlx::query("UPDATE tasker.workflow_steps SET lease_expires_at = now() - interval '1 second' WHERE step_uuid = $1")
        .bind(step.step_uuid)
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(
        claim("w2").await,
        "claimed",
        "an expired lease is taken over as a new attempt"
    );

    let processor = CompletionProcessorService::new(
        h.db.pool.clone(),
        h.core.queues.notifier().clone(),
        "w1".into(),
        Arc::new(InFlight::default()),
        Vec::new(),
        CompletionSettings {
            callback_timeout: Duration::from_secs(1),
            retry_deadline: Duration::from_secs(5),
            concurrency: 1,
            backoff: h.core.config.backoff.clone(),
            child_claims: None,
            max_payload_bytes: h.core.config.worker.max_payload_bytes,
            results_via: via,
        },
    );
    let dispatched = DispatchedStep {
        event_id: uuid::Uuid::now_v7(),
        context: Arc::new(tasker_worker::StepContext {
            task_uuid: task,
            step_uuid: step.step_uuid,
            step_name: step.name.clone(),
            namespace: "linear_workflow".into(),
            task_name: "linear_math".into(),
            task_version: "1.0.0".into(),
            attempt: 1,
            max_attempts: 3,
            handler_callable: step.handler_callable.clone(),
            initialization: json!({}),
            inputs: json!({}),
            task_context: json!({}),
            dependency_results: Default::default(),
            timeout_seconds: None,
        }),
        publishes_events: Vec::new(),
        queue: worker_queue("linear_workflow").unwrap(),
        dispatched_at: Instant::now(),
        lease_expires_at: chrono::Utc::now(),
    };
    let result = StepExecutionResult::success(
        step.step_uuid,
        json!(3),
        tasker_worker::metadata(chrono::Utc::now(), Instant::now(), "w1", json!(null)),
    );
    assert_eq!(
        processor
            .handle(CompletedStep {
                step: dispatched,
                result
            })
            .await,
        RecordOutcome::Refused
    );
    let row = StepRow::find_by_name(&h.db.pool, task, "add_two")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.state.as_str(), row.claim_owner.as_deref(), row.attempts),
        ("in_progress", Some("w2"), 2)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_message_is_archived_and_worker_keeps_serving() {
    let h = Harness::with_rust_worker(&[]).await;
    let queues = QueueClient::new(h.db.pool.clone()).await;
    let q = worker_queue("linear_workflow").unwrap();
    queues
        .send(&q, &json!({"what": "not a step message"}), &h.db.pool)
        .await
        .unwrap();
    queues
        .send(&q, &json!("just a string"), &h.db.pool)
        .await
        .unwrap();
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 6}))
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    let start = Instant::now();
    loop {
        let archived: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pgmq.a_worker_linear_workflow_queue")
                .fetch_one(&h.db.pool)
                .await
                .unwrap();
        if archived == 2 {
            break;
        }
        assert!(start.elapsed() < T, "malformed messages were not archived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The steps' own messages went with their recorded results.
    assert_eq!(queues.depth(&q).await.unwrap(), 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_channel_sizes_and_limits_take_effect() {
    let h = Harness::with_rust_worker(&[
        (
            "worker.mpsc_channels.handler_dispatch.max_concurrent_handlers",
            Toml::Integer(3),
        ),
        (
            "worker.mpsc_channels.handler_dispatch.dispatch_buffer_size",
            Toml::Integer(7),
        ),
        (
            "worker.mpsc_channels.handler_dispatch.completion_buffer_size",
            Toml::Integer(5),
        ),
        (
            "worker.mpsc_channels.handler_dispatch.handler_timeout_ms",
            Toml::Integer(200),
        ),
    ])
    .await;
    let status = h.worker.as_ref().unwrap().status().await.unwrap();
    assert_eq!(status.handler_permits_available, 3);
    assert_eq!(status.dispatch_channel_capacity, 7);
    assert_eq!(status.completion_channel_capacity, 5);
    // Examples::Sleep for 1 s against a 200 ms handler timeout (the template sets none).
    let task = h
        .create(
            "sleep_workflow",
            "parallel_sleep",
            json!({"sleep_ms": 1000}),
        )
        .await;
    assert_eq!(h.wait(task, T).await.state, "error");
    let step = &h.steps(task).await[0];
    assert_eq!(
        step.last_error.as_ref().unwrap()["error_type"],
        json!("handler_timeout")
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_mode_needs_no_notifications() {
    let h = Harness::with_rust_worker(&[
        ("worker.deployment_mode", Toml::String("polling".into())),
        ("worker.fallback_poll_interval_ms", Toml::Integer(50)),
    ])
    .await;
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    assert_eq!(h.result_of(task, "join").await, json!(37));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_handler_keeps_its_message_invisible_and_its_lease() {
    // Visibility 1 s and lease 2 s, but the handler runs 3 s: the heartbeat must keep both
    // alive, so the step runs exactly once.
    let h = Harness::with_rust_worker(&[
        ("queues.visibility_timeout_seconds", Toml::Integer(1)),
        ("worker.claim_lease_seconds", Toml::Integer(2)),
        ("worker.heartbeat_interval_ms", Toml::Integer(300)),
    ])
    .await;
    let task = h
        .create(
            "sleep_workflow",
            "parallel_sleep",
            json!({"sleep_ms": 3000}),
        )
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    for s in h.steps(task).await {
        assert_eq!(s.attempts, 1, "{} ran more than once", s.name);
    }
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_steps() {
    let mut h = Harness::with_rust_worker(&[]).await;
    let task = h
        .create("sleep_workflow", "parallel_sleep", json!({"sleep_ms": 400}))
        .await;
    tasker_tests::wait_for_steps_in(&h.db.pool, task, "in_progress", 4, T).await;
    h.worker
        .take()
        .unwrap()
        .shutdown_within(Duration::from_secs(10))
        .await;
    for s in h.steps(task).await {
        assert_ne!(s.state, "in_progress", "{} was left running", s.name);
        assert_eq!(s.attempts, 1);
    }
    assert_eq!(h.wait(task, T).await.state, "complete");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deadline_hands_unfinished_steps_back() {
    let mut h = Harness::with_rust_worker(&[]).await;
    let task = h
        .create(
            "sleep_workflow",
            "parallel_sleep",
            json!({"sleep_ms": 60000}),
        )
        .await;
    tasker_tests::wait_for_steps_in(&h.db.pool, task, "in_progress", 4, T).await;
    h.worker
        .take()
        .unwrap()
        .shutdown_within(Duration::from_millis(200))
        .await;
    for s in h.steps(task).await {
        assert_eq!(
            (s.state.as_str(), s.attempts, s.claim_owner.as_deref()),
            ("enqueued", 0, None),
            "{}",
            s.name
        );
    }
    // Another worker picks them straight up (their messages were made visible again).
    let worker = h
        .start_worker(Dispatch::Rust(tasker_worker_rust::example_registry()))
        .await;
    tasker_tests::wait_for_steps_in(&h.db.pool, task, "in_progress", 4, T).await;
    worker.shutdown_within(Duration::from_millis(100)).await;
    h.shutdown().await;
}

/// A publisher that panics on every other call and hangs on the rest.
struct BrokenPublisher(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl PostHandlerCallback for BrokenPublisher {
    async fn on_handler_complete(&self, _: &DispatchedStep, _: &StepExecutionResult) {
        if self
            .0
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            .is_multiple_of(2)
        {
            panic!("publisher exploded");
        }
        std::future::pending::<()>().await
    }
    fn name(&self) -> &str {
        "broken_publisher"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_publisher_never_fails_a_step() {
    let mut h = Harness::orchestration_only(&[(
        "worker.mpsc_channels.ffi_dispatch.callback_timeout_ms",
        Toml::Integer(50),
    )])
    .await;
    let worker = WorkerCore::start(
        h.db.pool.clone(),
        &h.config,
        WorkerOptions {
            namespaces: vec!["diamond_workflow".into()],
            dispatch: Dispatch::Rust(tasker_worker_rust::example_registry()),
            worker_id: None,
            callbacks: vec![Arc::new(BrokenPublisher(Default::default()))],
        },
    )
    .await
    .unwrap();
    h.worker = Some(worker);
    let task = h
        .create("diamond_workflow", "diamond_math", json!({"value": 3}))
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    assert_eq!(h.result_of(task, "join").await, json!(37));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_steps_in_flight_bounds_the_unfinished_steps_one_worker_holds() {
    let h = Harness::with_rust_worker(&[("worker.max_steps_in_flight", Toml::Integer(2))]).await;
    let task = h
        .create("sleep_workflow", "parallel_sleep", json!({"sleep_ms": 250}))
        .await;
    assert_eq!(h.wait(task, T).await.state, "complete");
    // A step's handler ran within [claimed, claimed + its execution time]. The worker claims
    // another step only once a handler has finished, so at most two of these overlap, though
    // ten handlers are free.
    let (steps, peak): (i64, i64) = sqlx::query_as(
        "WITH runs AS (
           SELECT s.started_at AS t0,
                  s.started_at + a.execution_time_ms * interval '1 millisecond' AS t1
             FROM tasker.workflow_steps s JOIN tasker.step_result_audits a USING (step_uuid)
            WHERE s.task_uuid = $1)
         SELECT (SELECT count(*) FROM runs),
                max((SELECT count(*) FROM runs o WHERE o.t0 <= r.t0 AND r.t0 < o.t1))
           FROM runs r",
    )
    .bind(task)
    .fetch_one(&h.db.pool)
    .await
    .unwrap();
    assert!(steps > 2, "{steps} steps");
    assert_eq!(peak, 2, "two unfinished steps held at a time");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_records_the_results_still_held_and_refuses_the_rest() {
    let mut h = Harness::orchestration_only(&[]).await;
    let mut firsts = Vec::new();
    for value in [1, 2] {
        let task = h
            .create("linear_workflow", "linear_math", json!({"value": value}))
            .await;
        firsts.push(h.steps(task).await.into_iter().next().unwrap().step_uuid);
    }
    // Orchestration stops here, so the recorded result stays where the worker left it.
    h.orchestrator
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    let queue = worker_queue("linear_workflow").unwrap();
    let messages = h.core.queues.read(&queue, 30, 10).await.unwrap();
    let msg_of = |step: uuid::Uuid| {
        messages
            .iter()
            .find(|m| m.message["step_uuid"] == json!(step))
            .unwrap()
            .msg_id
    };
    let (kept, lost) = (firsts[0], firsts[1]);
    let claimed: Vec<String> =
        sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps($1, 'w1', 60)")
            .bind(&firsts)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(claimed, ["claimed", "claimed"]);
    // w1 loses one claim to w2 (its lease expired), then records both results at once.
    sqlx::query("UPDATE tasker.workflow_steps SET lease_expires_at = now() - interval '1 second' WHERE step_uuid = $1")
        .bind(lost)
        .execute(&h.db.pool)
        .await
        .unwrap();
    let taken: String = sqlx::query_scalar("SELECT outcome FROM tasker.claim_steps($1, 'w2', 60)")
        .bind(vec![lost])
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(taken, "claimed");
    let results = json!([kept, lost]
        .iter()
        .map(|step| json!({
            "step_uuid": step, "attempt": 1, "success": true, "result": 7, "error": null,
            "execution_ms": 1, "metadata": {},
        }))
        .collect::<Vec<_>>());
    let refused: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT tasker.record_step_results('w1', $1)")
            .bind(&results)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert_eq!(refused, [lost]);

    let state = |step: uuid::Uuid| {
        let pool = h.db.pool.clone();
        async move {
            sqlx::query_as::<_, (String, Option<String>, i32, i64, bool)>(
                "SELECT s.state, s.claim_owner, s.attempts,
                        (SELECT count(*) FROM tasker.step_result_audits a WHERE a.step_uuid = s.step_uuid),
                        (SELECT most_recent FROM tasker.workflow_step_transitions t
                          WHERE t.step_uuid = s.step_uuid ORDER BY sort_key DESC LIMIT 1)
                   FROM tasker.workflow_steps s WHERE s.step_uuid = $1",
            )
            .bind(step)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        state(kept).await,
        ("enqueued_for_orchestration".into(), None, 1, 1, true)
    );
    assert_eq!(
        state(lost).await,
        ("in_progress".into(), Some("w2".into()), 2, 0, true)
    );
    // A recording leaves the queue alone: a claim through the queue deletes its step's
    // message (these steps were claimed by id, so theirs stay).
    let left: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT msg_id FROM pgmq.q_{} ORDER BY msg_id",
        queue.as_str()
    ))
    .fetch_all(&h.db.pool)
    .await
    .unwrap();
    let mut sent = vec![msg_of(kept), msg_of(lost)];
    sent.sort();
    assert_eq!(left, sent);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_reports_only_steps_really_lost_and_never_waits() {
    let mut h = Harness::orchestration_only(&[]).await;
    let task = h
        .create("linear_workflow", "linear_math", json!({"value": 1}))
        .await;
    h.orchestrator
        .take()
        .unwrap()
        .shutdown(Duration::from_secs(5))
        .await;
    let step = h.steps(task).await.into_iter().next().unwrap().step_uuid;
    let pool = h.db.pool.clone();
    let sql = |q: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(q)
                .bind(vec![step])
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    };
    let renew = || async {
        let lost: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT tasker.renew_leases($1, 'w1', 60)")
            .bind(vec![step])
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
        lost
    };
    assert_eq!(
        sql("SELECT outcome FROM tasker.claim_steps($1, 'w1', 5)").await,
        ["claimed"]
    );
    assert!(renew().await.is_empty());
    let lease: f64 = sqlx::query_scalar("SELECT extract(epoch FROM lease_expires_at - now())::float8 FROM tasker.workflow_steps WHERE step_uuid = $1")
        .bind(step)
        .fetch_one(&h.db.pool)
        .await
        .unwrap();
    assert!(lease > 30.0, "lease renewed to 60 s, {lease} s left");

    // A row someone else is changing is skipped at once, not waited for.
    let mut holder = h.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM tasker.workflow_steps WHERE step_uuid = $1 FOR NO KEY UPDATE")
        .bind(step)
        .execute(&mut *holder)
        .await
        .unwrap();
    let skipped = tokio::time::timeout(Duration::from_secs(2), renew()).await;
    assert!(skipped
        .expect("renewal must not wait for a locked row")
        .is_empty());
    holder.rollback().await.unwrap();

    // Taken over by another worker: lost.
    sqlx::query("UPDATE tasker.workflow_steps SET lease_expires_at = now() - interval '1 second' WHERE step_uuid = $1")
        .bind(step)
        .execute(&h.db.pool)
        .await
        .unwrap();
    assert_eq!(
        sql("SELECT outcome FROM tasker.claim_steps($1, 'w2', 60)").await,
        ["claimed"]
    );
    assert_eq!(renew().await, [step]);

    // Recorded by the worker that renews: not lost, just finished.
    let recorded = json!([{ "step_uuid": step, "attempt": 2, "success": true, "result": 3,
                            "error": null, "execution_ms": 1, "metadata": {} }]);
    let refused: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT tasker.record_step_results('w2', $1)")
            .bind(&recorded)
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert!(refused.is_empty());
    let lost_for_w2: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT tasker.renew_leases($1, 'w2', 60)")
            .bind(vec![step])
            .fetch_all(&h.db.pool)
            .await
            .unwrap();
    assert!(lost_for_w2.is_empty());
    h.shutdown().await;
}
