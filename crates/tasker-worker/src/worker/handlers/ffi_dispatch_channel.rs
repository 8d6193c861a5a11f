//! FfiDispatchChannel: the dispatch channel's consumer for foreign-language workers.
//!
//! Ruby handler threads call [`FfiDispatchChannel::poll`], which parks on the channel's
//! ready queue (the extension releases the GVL around it), and hand results back with
//! [`FfiDispatchChannel::complete`], which never blocks: the result is moved onto the
//! completion channel by a task spawned on the runtime. A sweeper warns about steps that
//! wait too long to be polled or completed, and turns steps never completed in time into
//! `ffi_completion_timeout` failures: a polled step has `completion_timeout_ms`, or its
//! handler's own timeout plus `timeout_grace_ms` when that is longer, so a handler still
//! within its timeout is never failed under it (and its step run twice).

use super::dispatch_service::{failure, metadata, CompletedStep};
use super::ready_queue::{Empty, ReadyQueue, Refused};
use crate::step::{DispatchedStep, StepContext};
use crate::worker::worker_metrics as m;
use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::config::FfiDispatchConfig;
use tasker_shared::result::{ErrorType, StepError, StepExecutionResult, StepOutcome};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest single wait inside `poll`, so an interrupt flag is noticed promptly.
const POLL_SLICE: Duration = Duration::from_millis(20);

/// One step handed to a foreign handler.
#[derive(Debug, Clone, Serialize)]
pub struct PolledStep {
    pub event_id: Uuid,
    pub context: Arc<StepContext>,
}

/// A foreign handler's error, as it reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FfiError {
    pub message: String,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub retryable: Option<bool>,
    #[serde(default)]
    pub error_class: Option<String>,
    #[serde(default)]
    pub backtrace: Option<Vec<String>>,
    #[serde(default)]
    pub retry_after_seconds: Option<f64>,
}

/// A foreign handler's result, as it reports it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FfiStepResult {
    pub success: bool,
    #[serde(default)]
    pub result: serde_json::Value,
    #[serde(default)]
    pub metadata: serde_json::Value,
    #[serde(default)]
    pub error: Option<FfiError>,
    /// A decision's choice (an array of step names).
    #[serde(default)]
    pub next_steps: Option<serde_json::Value>,
    /// A batchable step's batches (an array of objects).
    #[serde(default)]
    pub batches: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FfiMetrics {
    /// Dispatched and not yet polled.
    pub pending: usize,
    /// Polled and not yet completed.
    pub in_process: usize,
    pub oldest_pending_age_ms: u64,
    pub starving: usize,
    pub timeouts: u64,
    pub completions_refused: u64,
    pub completed: u64,
}

struct InProcess {
    step: DispatchedStep,
    polled_at: Instant,
    started_at: DateTime<Utc>,
}

pub struct FfiDispatchChannel {
    ready: ReadyQueue<DispatchedStep>,
    waiting: Mutex<HashMap<Uuid, Instant>>,
    in_process: Mutex<HashMap<Uuid, InProcess>>,
    warned: Mutex<HashSet<Uuid>>,
    completions: Mutex<Option<mpsc::Sender<CompletedStep>>>,
    runtime: tokio::runtime::Handle,
    config: FfiDispatchConfig,
    /// A handler's timeout when its step sets none (`handler_timeout_ms`).
    handler_timeout: Duration,
    worker_id: String,
    room: Notify,
    timeouts: AtomicU64,
    refused: AtomicU64,
    completed: AtomicU64,
    starving: AtomicUsize,
}

impl FfiDispatchChannel {
    pub fn new(
        config: FfiDispatchConfig,
        handler_timeout: Duration,
        completions: mpsc::Sender<CompletedStep>,
        runtime: tokio::runtime::Handle,
        worker_id: String,
    ) -> Arc<Self> {
        Arc::new(Self {
            ready: ReadyQueue::new(config.dispatch_buffer_size),
            waiting: Mutex::default(),
            in_process: Mutex::default(),
            warned: Mutex::default(),
            completions: Mutex::new(Some(completions)),
            runtime,
            config,
            handler_timeout,
            worker_id,
            room: Notify::new(),
            timeouts: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            starving: AtomicUsize::new(0),
        })
    }

    /// Moves steps from the handler dispatch channel to the pollable buffer until the
    /// dispatch channel closes; then pollers take what is buffered and stop waiting.
    pub async fn pump(self: Arc<Self>, mut dispatch: mpsc::Receiver<DispatchedStep>) {
        while let Some(step) = dispatch.recv().await {
            self.waiting.lock().insert(step.event_id, Instant::now());
            let mut step = step;
            loop {
                match self.ready.try_push(step) {
                    Ok(()) => break,
                    Err(Refused::Full(s)) => {
                        step = s;
                        let _ = tokio::time::timeout(POLL_SLICE, self.room.notified()).await;
                    }
                    Err(Refused::Closed) => return,
                }
            }
            metrics::gauge!(m::FFI_PENDING).set(self.ready.len() as f64);
        }
        self.ready.seal();
    }

    /// Blocks up to `timeout` for the next step. Returns None on timeout, when the channel
    /// is closed, or as soon as `interrupted` is set (the extension's unblocking function).
    pub fn poll(&self, timeout: Duration, interrupted: &AtomicBool) -> Option<PolledStep> {
        let deadline = Instant::now() + timeout;
        loop {
            if interrupted.load(Ordering::Acquire) {
                return None;
            }
            let slice_end = deadline.min(Instant::now() + POLL_SLICE);
            match self.ready.pop_until(slice_end) {
                Ok(step) => return Some(self.take(step)),
                Err(Empty::Ended) => return None,
                Err(Empty::TimedOut) if Instant::now() >= deadline => return None,
                Err(Empty::TimedOut) => {}
            }
        }
    }

    /// The next step if one is waiting; never blocks.
    pub fn try_poll(&self) -> Option<PolledStep> {
        self.ready.try_pop().map(|step| self.take(step))
    }

    fn take(&self, step: DispatchedStep) -> PolledStep {
        self.room.notify_one();
        self.waiting.lock().remove(&step.event_id);
        let polled = PolledStep {
            event_id: step.event_id,
            context: step.context.clone(),
        };
        self.in_process.lock().insert(
            step.event_id,
            InProcess {
                step,
                polled_at: Instant::now(),
                started_at: Utc::now(),
            },
        );
        polled
    }

    /// Hands a result back. Returns at once; false for an unknown, duplicate or late
    /// event id (a step the sweeper already timed out is never completed twice).
    pub fn complete(&self, event_id: Uuid, result: FfiStepResult) -> bool {
        let Some(entry) = self.in_process.lock().remove(&event_id) else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::FFI_REFUSED).increment(1);
            return false;
        };
        self.warned.lock().remove(&event_id);
        let result = convert(&entry, result, &self.worker_id);
        self.completed.fetch_add(1, Ordering::Relaxed);
        self.send(CompletedStep {
            step: entry.step,
            result,
        });
        true
    }

    fn send(&self, done: CompletedStep) {
        let Some(tx) = self.completions.lock().clone() else {
            tracing::error!(step = %done.step.context.step_uuid, "completion channel closed; result not recorded");
            return;
        };
        // Fire and forget: the calling (Ruby) thread never waits for the completion channel.
        // Room now means no task is needed; otherwise a task waits for room.
        let done = match tx.try_send(done) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("completion channel closed; result not recorded");
                return;
            }
            Err(mpsc::error::TrySendError::Full(done)) => done,
        };
        self.runtime.spawn(async move {
            if tx.send(done).await.is_err() {
                tracing::error!("completion channel closed; result not recorded");
            }
        });
    }

    /// One pass of the sweeper: starvation warnings and completion timeouts.
    pub fn sweep(&self) {
        let now = Instant::now();
        let threshold = self.config.starvation_warning_threshold();
        let starving: Vec<(Uuid, Duration)> = self
            .waiting
            .lock()
            .iter()
            .map(|(id, at)| (*id, now.duration_since(*at)))
            .filter(|(_, age)| *age >= threshold)
            .collect();
        self.starving.store(starving.len(), Ordering::Relaxed);
        metrics::gauge!(m::FFI_STARVING).set(starving.len() as f64);
        for (id, age) in &starving {
            if self.warned.lock().insert(*id) {
                tracing::warn!(event_id = %id, waited_ms = age.as_millis() as u64, "step waiting to be polled longer than starvation_warning_threshold_ms: are the handler threads busy or stopped?");
            }
        }
        let mut expired = Vec::new();
        {
            let mut in_process = self.in_process.lock();
            let ids: Vec<Uuid> = in_process
                .iter()
                .filter(|(_, e)| now.duration_since(e.polled_at) >= self.deadline(&e.step))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if let Some(e) = in_process.remove(&id) {
                    expired.push(e);
                }
            }
            for (id, e) in in_process.iter() {
                let age = now.duration_since(e.polled_at);
                if age >= threshold && self.warned.lock().insert(*id) {
                    tracing::warn!(event_id = %id, step = %e.step.context.step_name, running_ms = age.as_millis() as u64, "step polled but not completed after starvation_warning_threshold_ms");
                }
            }
        }
        for e in expired {
            self.warned.lock().remove(&e.step.event_id);
            self.timeouts.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::FFI_TIMEOUTS).increment(1);
            let deadline = self.deadline(&e.step);
            tracing::warn!(step = %e.step.context.step_uuid, deadline_ms = deadline.as_millis() as u64, "handler never completed in time; failing the step");
            let result = failure(
                &e.step,
                StepError::new(
                    ErrorType::FfiCompletionTimeout,
                    format!(
                        "step '{}' was polled but not completed within {} ms",
                        e.step.context.step_name,
                        deadline.as_millis()
                    ),
                ),
                e.started_at,
                e.polled_at,
                &self.worker_id,
            );
            self.send(CompletedStep {
                step: e.step,
                result,
            });
        }
    }

    /// How long a polled step may take before it is failed: `completion_timeout_ms`, or its
    /// handler's timeout plus `timeout_grace_ms` (the time the handler's own timeout result
    /// has to arrive) when that is longer.
    fn deadline(&self, step: &DispatchedStep) -> Duration {
        let own = step
            .context
            .timeout_seconds
            .map_or(self.handler_timeout, Duration::from_secs);
        self.config
            .completion_timeout()
            .max(own + self.config.timeout_grace())
    }

    /// Runs the sweeper until shutdown.
    pub async fn run_sweeper(self: Arc<Self>, shutdown: CancellationToken) {
        let period = (self
            .config
            .starvation_warning_threshold()
            .min(self.config.completion_timeout())
            / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => self.sweep(),
            }
        }
    }

    pub fn metrics(&self) -> FfiMetrics {
        let now = Instant::now();
        let waiting = self.waiting.lock();
        let oldest = waiting
            .values()
            .map(|at| now.duration_since(*at))
            .max()
            .unwrap_or_default();
        FfiMetrics {
            pending: waiting.len(),
            in_process: self.in_process.lock().len(),
            oldest_pending_age_ms: oldest.as_millis() as u64,
            starving: self.starving.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            completions_refused: self.refused.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
        }
    }

    /// Steps polled but not completed.
    pub fn in_process_steps(&self) -> Vec<Uuid> {
        self.in_process
            .lock()
            .values()
            .map(|e| e.step.context.step_uuid)
            .collect()
    }

    /// Stops handing out steps: pollers return None from now on, even while steps remain
    /// buffered (those stay claimed by this worker and are handed back at shutdown).
    pub fn stop_polling(&self) {
        self.ready.close();
    }

    pub fn is_closed(&self) -> bool {
        self.ready.is_closed()
    }

    /// Releases the completion channel so the completion processor can finish.
    pub fn close(&self) {
        self.stop_polling();
        self.completions.lock().take();
    }
}

fn convert(entry: &InProcess, r: FfiStepResult, worker_id: &str) -> StepExecutionResult {
    let step = entry.step.context.step_uuid;
    if !(r.metadata.is_null() || r.metadata.is_object()) {
        let got = r.metadata.to_string();
        let got = got.chars().take(200).collect::<String>();
        let meta = metadata(
            entry.started_at,
            entry.polled_at,
            worker_id,
            Default::default(),
        );
        return StepExecutionResult::failure(
            step,
            StepError::new(
                ErrorType::InvalidResult,
                format!("the handler's metadata must be a Hash (a JSON object), got {got}"),
            ),
            meta,
        );
    }
    let meta = metadata(entry.started_at, entry.polled_at, worker_id, r.metadata);
    if r.success {
        return match StepOutcome::from_parts(r.next_steps, r.batches) {
            Ok(outcome) => StepExecutionResult::success(step, r.result, meta).with_outcome(outcome),
            Err(error) => StepExecutionResult::failure(step, error, meta),
        };
    }
    let e = r.error.unwrap_or_else(|| FfiError {
        message: "handler reported failure without an error".into(),
        ..Default::default()
    });
    let error_type = e
        .error_type
        .as_deref()
        .map(ErrorType::from)
        .unwrap_or(ErrorType::HandlerError);
    let retryable = e
        .retryable
        .unwrap_or_else(|| error_type.default_retryable());
    StepExecutionResult::failure(
        step,
        StepError {
            message: e.message,
            error_type,
            retryable,
            error_class: e.error_class,
            backtrace: e.backtrace,
            retry_after_ms: e
                .retry_after_seconds
                .filter(|s| *s >= 0.0)
                .map(|s| (s * 1000.0) as u64),
        },
        meta,
    )
}
