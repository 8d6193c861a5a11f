//! The handler dispatch suite the seed deferred: concurrency limits, backpressure, permit
//! release before completion, and every failure result, without a database.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::queue::QueueName;
use tasker_shared::result::ErrorType;
use tasker_worker::{
    execute, CompletedStep, DispatchedStep, HandlerDispatchService, HandlerError, HandlerOutput,
    HandlerRegistry, StepContext, StepHandler,
};
use tokio::sync::{mpsc, Semaphore};
use uuid::Uuid;

fn step(callable: &str, timeout_seconds: Option<u64>) -> DispatchedStep {
    DispatchedStep {
        event_id: Uuid::now_v7(),
        context: Arc::new(StepContext {
            task_uuid: Uuid::now_v7(),
            step_uuid: Uuid::now_v7(),
            step_name: "s".into(),
            namespace: "ns".into(),
            task_name: "t".into(),
            task_version: "1".into(),
            attempt: 1,
            max_attempts: 3,
            handler_callable: callable.into(),
            initialization: serde_json::json!({}),
            inputs: serde_json::json!({}),
            task_context: serde_json::json!({}),
            dependency_results: Default::default(),
            timeout_seconds,
        }),
        publishes_events: Vec::new(),
        queue: QueueName::new("worker_ns_queue").unwrap(),
        dispatched_at: Instant::now(),
        lease_expires_at: chrono::Utc::now(),
    }
}

/// Sleeps and tracks how many instances run at once.
struct Tracked {
    now: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
    sleep: Duration,
}

#[async_trait::async_trait]
impl StepHandler for Tracked {
    async fn call(&self, _: &StepContext) -> Result<HandlerOutput, HandlerError> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        tokio::time::sleep(self.sleep).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        Ok(HandlerOutput::new(serde_json::json!(n)))
    }
}

struct Fails(HandlerError);

#[async_trait::async_trait]
impl StepHandler for Fails {
    async fn call(&self, _: &StepContext) -> Result<HandlerOutput, HandlerError> {
        Err(self.0.clone())
    }
}

struct Hangs;

#[async_trait::async_trait]
impl StepHandler for Hangs {
    async fn call(&self, _: &StepContext) -> Result<HandlerOutput, HandlerError> {
        std::future::pending().await
    }
}

struct Panics;

#[async_trait::async_trait]
impl StepHandler for Panics {
    async fn call(&self, _: &StepContext) -> Result<HandlerOutput, HandlerError> {
        panic!("boom")
    }
}

struct Service {
    dispatch: mpsc::Sender<DispatchedStep>,
    completions: mpsc::Receiver<CompletedStep>,
    semaphore: Arc<Semaphore>,
    task: tokio::task::JoinHandle<()>,
}

fn start(
    registry: HandlerRegistry,
    permits: usize,
    dispatch_buffer: usize,
    completion_buffer: usize,
    timeout: Duration,
) -> Service {
    let (dtx, drx) = mpsc::channel(dispatch_buffer);
    let (ctx, crx) = mpsc::channel(completion_buffer);
    let semaphore = Arc::new(Semaphore::new(permits));
    let svc = HandlerDispatchService::new(
        drx,
        ctx,
        Arc::new(registry),
        semaphore.clone(),
        timeout,
        "w".into(),
    );
    Service {
        dispatch: dtx,
        completions: crx,
        semaphore,
        task: tokio::spawn(svc.run()),
    }
}

#[tokio::test]
async fn concurrency_never_exceeds_max_concurrent_handlers() {
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut r = HandlerRegistry::new();
    r.register(
        "T",
        Tracked {
            now: now.clone(),
            peak: peak.clone(),
            sleep: Duration::from_millis(10),
        },
    );
    let mut s = start(r, 4, 100, 100, Duration::from_secs(5));
    for _ in 0..40 {
        s.dispatch.send(step("T", None)).await.unwrap();
    }
    for _ in 0..40 {
        assert!(s.completions.recv().await.unwrap().result.success);
    }
    assert_eq!(
        peak.load(Ordering::SeqCst),
        4,
        "high-water mark equals the limit, never more"
    );
}

#[tokio::test]
async fn full_dispatch_channel_pushes_back() {
    let mut r = HandlerRegistry::new();
    r.register("H", Hangs);
    let s = start(r, 1, 2, 10, Duration::from_secs(60));
    // One step holds the only permit, one waits for it inside the service, two fill the buffer.
    let mut accepted = 0;
    for _ in 0..10 {
        match tokio::time::timeout(Duration::from_millis(100), s.dispatch.send(step("H", None)))
            .await
        {
            Ok(Ok(())) => accepted += 1,
            _ => break,
        }
    }
    assert!(
        (2..=4).contains(&accepted),
        "accepted {accepted} before backpressure"
    );
    assert_eq!(s.dispatch.capacity(), 0);
}

#[tokio::test]
async fn full_completion_channel_does_not_hold_permits() {
    let mut r = HandlerRegistry::new();
    r.register(
        "Q",
        Tracked {
            now: Arc::default(),
            peak: Arc::default(),
            sleep: Duration::ZERO,
        },
    );
    let s = start(r, 2, 100, 1, Duration::from_secs(5));
    for _ in 0..6 {
        s.dispatch.send(step("Q", None)).await.unwrap();
    }
    // Nobody reads completions: results pile up, but every permit comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(s.semaphore.available_permits(), 2);
    assert_eq!(
        s.dispatch.capacity(),
        100,
        "all six were taken off the dispatch channel"
    );
    drop(s.completions);
}

#[tokio::test]
async fn timeout_panic_error_and_not_found_each_produce_their_result() {
    let mut r = HandlerRegistry::new();
    r.register("hang", Hangs)
        .register("panic", Panics)
        .register(
            "retry",
            Fails(HandlerError::retryable("busy").with_retry_after(Duration::from_secs(5))),
        )
        .register(
            "perm",
            Fails(HandlerError::permanent("bad input").with_error_type("validation_error")),
        );
    let t = Duration::from_millis(50);
    let cases = [
        ("hang", ErrorType::HandlerTimeout, true),
        ("panic", ErrorType::HandlerPanic, false),
        ("retry", ErrorType::HandlerError, true),
        ("perm", ErrorType::Custom("validation_error".into()), false),
        ("missing", ErrorType::HandlerNotFound, false),
    ];
    for (callable, error_type, retryable) in cases {
        let result = execute(&r, &step(callable, None), t, "w").await;
        let err = result.error.expect("a failure");
        assert_eq!(
            (err.error_type, err.retryable),
            (error_type, retryable),
            "{callable}"
        );
    }
    let retry = execute(&r, &step("retry", None), t, "w").await;
    assert_eq!(retry.error.unwrap().retry_after_ms, Some(5000));
    let panic = execute(&r, &step("panic", None), t, "w").await;
    assert!(panic.error.unwrap().message.contains("boom"));
}

#[tokio::test]
async fn step_timeout_seconds_wins_over_handler_timeout_ms() {
    let mut r = HandlerRegistry::new();
    r.register(
        "T",
        Tracked {
            now: Arc::default(),
            peak: Arc::default(),
            sleep: Duration::from_millis(1500),
        },
    );
    let mut s = start(r, 2, 10, 10, Duration::from_millis(100));
    s.dispatch.send(step("T", Some(5))).await.unwrap();
    s.dispatch.send(step("T", None)).await.unwrap();
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        let c = s.completions.recv().await.unwrap();
        outcomes.push((c.step.context.timeout_seconds, c.result.success));
    }
    outcomes.sort();
    assert_eq!(outcomes, [(None, false), (Some(5), true)]);
}

#[tokio::test]
async fn closed_semaphore_yields_semaphore_acquisition_failed() {
    let mut r = HandlerRegistry::new();
    r.register(
        "T",
        Tracked {
            now: Arc::default(),
            peak: Arc::default(),
            sleep: Duration::ZERO,
        },
    );
    let mut s = start(r, 1, 10, 10, Duration::from_secs(1));
    s.semaphore.close();
    s.dispatch.send(step("T", None)).await.unwrap();
    let c = s.completions.recv().await.unwrap();
    assert_eq!(
        c.result.error.unwrap().error_type,
        ErrorType::SemaphoreAcquisitionFailed
    );
}

#[tokio::test]
async fn service_drains_in_flight_handlers_when_dispatch_closes() {
    let mut r = HandlerRegistry::new();
    r.register(
        "T",
        Tracked {
            now: Arc::default(),
            peak: Arc::default(),
            sleep: Duration::from_millis(100),
        },
    );
    let mut s = start(r, 3, 10, 10, Duration::from_secs(5));
    for _ in 0..3 {
        s.dispatch.send(step("T", None)).await.unwrap();
    }
    drop(s.dispatch);
    tokio::time::timeout(Duration::from_secs(5), s.task)
        .await
        .unwrap()
        .unwrap();
    let mut n = 0;
    while let Ok(c) = s.completions.try_recv() {
        assert!(c.result.success);
        n += 1;
    }
    assert_eq!(
        n, 3,
        "every started handler's result was delivered before the service ended"
    );
}
