//! FfiDispatchChannel without a database: poll/complete, refusals, the sweeper's timeouts
//! and starvation warnings, and interruptible polls.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::config::FfiDispatchConfig;
use tasker_shared::queue::QueueName;
use tasker_shared::result::ErrorType;
use tasker_worker::ffi::{FfiDispatchChannel, FfiError, FfiStepResult, PolledStep};
use tasker_worker::{CompletedStep, DispatchedStep, StepContext};
use tokio::sync::mpsc;
use uuid::Uuid;

fn step() -> DispatchedStep {
    step_with_timeout(None)
}

fn step_with_timeout(timeout_seconds: Option<u64>) -> DispatchedStep {
    DispatchedStep {
        event_id: Uuid::now_v7(),
        context: Arc::new(StepContext {
            task_uuid: Uuid::now_v7(),
            step_uuid: Uuid::now_v7(),
            step_name: "charge".into(),
            namespace: "ns".into(),
            task_name: "t".into(),
            task_version: "1".into(),
            attempt: 1,
            max_attempts: 3,
            handler_callable: "Charge".into(),
            initialization: serde_json::json!({"strict": true}),
            inputs: serde_json::json!({}),
            task_context: serde_json::json!({"order_id": 7}),
            dependency_results: Default::default(),
            timeout_seconds,
        }),
        publishes_events: Vec::new(),
        queue: QueueName::new("worker_ns_queue").unwrap(),
        dispatched_at: Instant::now(),
        lease_expires_at: chrono::Utc::now(),
    }
}

struct Fixture {
    channel: Arc<FfiDispatchChannel>,
    dispatch: mpsc::Sender<DispatchedStep>,
    completions: mpsc::Receiver<CompletedStep>,
}

fn fixture(completion_timeout_ms: u64, starvation_ms: u64) -> Fixture {
    let config = FfiDispatchConfig {
        dispatch_buffer_size: 16,
        completion_timeout_ms,
        timeout_grace_ms: 100,
        starvation_warning_threshold_ms: starvation_ms,
        callback_timeout_ms: 100,
    };
    let (ctx, crx) = mpsc::channel(16);
    let (dtx, drx) = mpsc::channel(16);
    let channel = FfiDispatchChannel::new(
        config,
        // Steps that set no timeout_seconds: shorter than any completion timeout used here.
        Duration::from_millis(10),
        ctx,
        tokio::runtime::Handle::current(),
        "ruby-1".into(),
    );
    tokio::spawn(channel.clone().pump(drx));
    Fixture {
        channel,
        dispatch: dtx,
        completions: crx,
    }
}

fn ok() -> FfiStepResult {
    FfiStepResult {
        success: true,
        result: serde_json::json!({"charge_id": "ch_7"}),
        metadata: serde_json::json!({"gateway": "x"}),
        error: None,
        ..Default::default()
    }
}

async fn poll(channel: &Arc<FfiDispatchChannel>, timeout: Duration) -> Option<PolledStep> {
    let c = channel.clone();
    tokio::task::spawn_blocking(move || c.poll(timeout, &AtomicBool::new(false)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_complete_round_trip() {
    let mut f = fixture(30_000, 10_000);
    f.dispatch.send(step()).await.unwrap();
    let polled = poll(&f.channel, Duration::from_secs(5))
        .await
        .expect("a step");
    assert_eq!(polled.context.task_context["order_id"], 7);
    assert!(f.channel.complete(polled.event_id, ok()));
    let done = f.completions.recv().await.unwrap();
    assert!(done.result.success);
    assert_eq!(done.result.result["charge_id"], "ch_7");
    assert_eq!(done.result.metadata.worker_id, "ruby-1");
    assert_eq!(f.channel.metrics().completed, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_and_unknown_completions_are_refused() {
    let f = fixture(30_000, 10_000);
    f.dispatch.send(step()).await.unwrap();
    let polled = poll(&f.channel, Duration::from_secs(5)).await.unwrap();
    assert!(f.channel.complete(polled.event_id, ok()));
    assert!(
        !f.channel.complete(polled.event_id, ok()),
        "second completion"
    );
    assert!(!f.channel.complete(Uuid::now_v7(), ok()), "unknown id");
    assert_eq!(f.channel.metrics().completions_refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returned_non_retryable_failure_stays_non_retryable() {
    let mut f = fixture(30_000, 10_000);
    f.dispatch.send(step()).await.unwrap();
    let polled = poll(&f.channel, Duration::from_secs(5)).await.unwrap();
    let failure = FfiStepResult {
        success: false,
        result: serde_json::Value::Null,
        metadata: serde_json::Value::Null,
        error: Some(FfiError {
            message: "card declined".into(),
            error_type: Some("card_declined".into()),
            retryable: Some(false),
            error_class: Some("Payments::Declined".into()),
            backtrace: Some(vec!["charge.rb:3".into()]),
            retry_after_seconds: None,
        }),
        ..Default::default()
    };
    assert!(f.channel.complete(polled.event_id, failure));
    let err = f.completions.recv().await.unwrap().result.error.unwrap();
    assert_eq!(
        (err.error_type, err.retryable),
        (ErrorType::Custom("card_declined".into()), false)
    );
    assert_eq!(err.error_class.as_deref(), Some("Payments::Declined"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweeper_times_out_uncompleted_steps_and_refuses_late_completion() {
    let mut f = fixture(100, 10_000);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(f.channel.clone().run_sweeper(stop.clone()));
    f.dispatch.send(step()).await.unwrap();
    let polled = poll(&f.channel, Duration::from_secs(5)).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(5), f.completions.recv())
        .await
        .unwrap()
        .unwrap();
    let err = done.result.error.unwrap();
    assert_eq!(
        (err.error_type, err.retryable),
        (ErrorType::FfiCompletionTimeout, true)
    );
    assert!(
        !f.channel.complete(polled.event_id, ok()),
        "late completion"
    );
    let m = f.channel.metrics();
    assert_eq!((m.timeouts, m.completions_refused, m.in_process), (1, 1, 0));
    stop.cancel();
}

/// A handler still within its own timeout is never failed under it: with the sweeper's
/// completion timeout shorter than the step's timeout_seconds, the step may run its whole
/// timeout plus the grace, then it times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polled_step_has_its_own_timeout_plus_the_grace_before_it_is_failed() {
    let mut f = fixture(100, 10_000);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(f.channel.clone().run_sweeper(stop.clone()));

    f.dispatch.send(step_with_timeout(Some(1))).await.unwrap();
    let polled = poll(&f.channel, Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        f.completions.try_recv().is_err(),
        "failed at 600 ms, within its 1 s timeout"
    );
    assert!(
        f.channel.complete(polled.event_id, ok()),
        "completed in time"
    );
    assert!(f.completions.recv().await.unwrap().result.success);

    f.dispatch.send(step_with_timeout(Some(1))).await.unwrap();
    let started = Instant::now();
    poll(&f.channel, Duration::from_secs(5)).await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(5), f.completions.recv())
        .await
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    let err = done.result.error.unwrap();
    assert_eq!(err.error_type, ErrorType::FfiCompletionTimeout);
    assert!(err.message.contains("within 1100 ms"), "{}", err.message);
    assert!(
        waited >= Duration::from_millis(1100),
        "failed after {waited:?}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpolled_steps_are_reported_starving() {
    let f = fixture(30_000, 50);
    f.dispatch.send(step()).await.unwrap();
    f.dispatch.send(step()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    f.channel.sweep();
    let m = f.channel.metrics();
    assert_eq!((m.pending, m.starving), (2, 2));
    assert!(m.oldest_pending_age_ms >= 100, "{m:?}");
    poll(&f.channel, Duration::from_secs(1)).await.unwrap();
    poll(&f.channel, Duration::from_secs(1)).await.unwrap();
    f.channel.sweep();
    assert_eq!(f.channel.metrics().starving, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_poll_returns_promptly() {
    let f = fixture(30_000, 10_000);
    let flag = Arc::new(AtomicBool::new(false));
    let (c, fl) = (f.channel.clone(), flag.clone());
    let start = Instant::now();
    let waiter = std::thread::spawn(move || c.poll(Duration::from_secs(30), &fl));
    std::thread::sleep(Duration::from_millis(50));
    flag.store(true, std::sync::atomic::Ordering::Release);
    assert!(waiter.join().unwrap().is_none());
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_channel_hands_out_nothing() {
    let f = fixture(30_000, 10_000);
    f.channel.stop_polling();
    let start = Instant::now();
    assert!(poll(&f.channel, Duration::from_secs(10)).await.is_none());
    assert!(start.elapsed() < Duration::from_secs(1));
}
