//! A real [`FfiDispatchChannel`] with no database behind it: steps are fed in by the
//! caller, results land in an in-memory sink. The language bindings' tests use it for
//! poll/complete, timeouts and starvation; their benchmarks time the FFI round trip with it.

use super::dispatch_service::CompletedStep;
use super::ffi_dispatch_channel::FfiDispatchChannel;
use crate::{DispatchedStep, StepContext};
use chrono::Utc;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tasker_shared::config::{ConfigError, ConfigLoader, FfiDispatchConfig};
use tasker_shared::queue::QueueName;
use tasker_shared::StepExecutionResult;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// How many recent results the sink keeps for inspection.
const KEEP_RESULTS: usize = 16;
/// The most steps one `feed` queues: a benchmark's worth, far below what would exhaust
/// memory or wrap the message ids.
pub const MAX_FEED: u64 = 10_000_000;

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("loopback config.{key}: expected a non-negative integer below 2**63, got {value}")]
    InvalidSetting { key: String, value: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("step.{0}: unknown field")]
    UnknownField(String),
    #[error("step: {0}")]
    InvalidStep(String),
    #[error("feed count: at most {MAX_FEED}, got {0}")]
    TooMany(u64),
    #[error("the loopback channel is closed")]
    Closed,
}

/// Where completed steps go instead of the database.
#[derive(Default)]
struct Sink {
    completed: AtomicU64,
    last: Mutex<VecDeque<StepExecutionResult>>,
    arrived: Notify,
}

impl Sink {
    async fn drain(self: Arc<Self>, mut rx: mpsc::Receiver<CompletedStep>) {
        while let Some(done) = rx.recv().await {
            {
                let mut last = self.last.lock();
                if last.len() == KEEP_RESULTS {
                    last.pop_front();
                }
                last.push_back(done.result);
            }
            self.completed.fetch_add(1, Ordering::Release);
            self.arrived.notify_waiters();
        }
    }
}

pub struct Loopback {
    pub ffi: Arc<FfiDispatchChannel>,
    runtime: Handle,
    feed: Mutex<Option<mpsc::Sender<DispatchedStep>>>,
    sink: Arc<Sink>,
    shutdown: CancellationToken,
    queue: QueueName,
}

impl Loopback {
    /// A channel with the shipped settings, `overrides` (FfiDispatchConfig keys:
    /// dispatch_buffer_size, completion_timeout_ms, ...) over them; its pump, sweeper and
    /// sink run on `runtime`.
    pub fn new(
        runtime: Handle,
        overrides: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, LoopbackError> {
        let (config, handler_timeout) = channel_config(overrides)?;
        let (completion_tx, completion_rx) = mpsc::channel(config.dispatch_buffer_size);
        let (feed_tx, feed_rx) = mpsc::channel(config.dispatch_buffer_size);
        let sink = Arc::new(Sink::default());
        let shutdown = CancellationToken::new();
        let ffi = FfiDispatchChannel::new(
            config,
            handler_timeout,
            completion_tx,
            runtime.clone(),
            "loopback".into(),
        );
        runtime.spawn(sink.clone().drain(completion_rx));
        runtime.spawn(ffi.clone().pump(feed_rx));
        runtime.spawn(ffi.clone().run_sweeper(shutdown.clone()));
        Ok(Self {
            ffi,
            runtime,
            feed: Mutex::new(Some(feed_tx)),
            sink,
            shutdown,
            queue: QueueName::new("loopback").map_err(LoopbackError::InvalidStep)?,
        })
    }

    /// Queues `count` copies of `step` (each a fresh event id and step uuid) through the
    /// channel's pump. Returns at once; the copies flow in as the buffer makes room.
    pub fn feed(&self, count: u64, template: StepContext) -> Result<u64, LoopbackError> {
        if count > MAX_FEED {
            return Err(LoopbackError::TooMany(count));
        }
        let Some(tx) = self.feed.lock().clone() else {
            return Err(LoopbackError::Closed);
        };
        let queue = self.queue.clone();
        self.runtime.spawn(async move {
            for _ in 0..count {
                let mut context = template.clone();
                context.step_uuid = uuid::Uuid::new_v4();
                let step = DispatchedStep {
                    event_id: uuid::Uuid::now_v7(),
                    context: Arc::new(context),
                    publishes_events: Vec::new(),
                    queue: queue.clone(),
                    dispatched_at: Instant::now(),
                    lease_expires_at: Utc::now() + chrono::Duration::hours(1),
                };
                if tx.send(step).await.is_err() {
                    return;
                }
            }
        });
        Ok(count)
    }

    /// Results that reached the sink (completions and sweeper timeouts).
    pub fn completed_count(&self) -> u64 {
        self.sink.completed.load(Ordering::Acquire)
    }

    /// The most recent results, oldest first.
    pub fn last_results(&self) -> Vec<StepExecutionResult> {
        self.sink.last.lock().iter().cloned().collect()
    }

    /// Completes once `count` results reached the sink.
    pub async fn wait_for_completions(&self, count: u64) {
        loop {
            let arrived = self.sink.arrived.notified();
            if self.completed_count() >= count {
                return;
            }
            arrived.await;
        }
    }

    /// Stops the pump and the sweeper; pollers get nothing once the buffer is empty.
    pub fn close(&self) {
        self.shutdown.cancel();
        self.feed.lock().take();
        self.ffi.close();
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.close();
    }
}

/// The channel's settings (base configuration, the given keys over them) and the handler
/// timeout of steps that set none.
fn channel_config(
    overrides: serde_json::Map<String, serde_json::Value>,
) -> Result<(FfiDispatchConfig, Duration), LoopbackError> {
    let mut loader = ConfigLoader::isolated(None, "loopback");
    for (key, value) in overrides {
        let setting = value
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .map(toml::Value::Integer)
            .ok_or_else(|| LoopbackError::InvalidSetting {
                key: key.clone(),
                value: value.to_string(),
            })?;
        loader = loader.set(&format!("worker.mpsc_channels.ffi_dispatch.{key}"), setting);
    }
    let channels = loader.load()?.worker.mpsc_channels;
    Ok((
        channels.ffi_dispatch,
        channels.handler_dispatch.handler_timeout(),
    ))
}

/// A StepContext from a partial JSON object: defaults first, the given fields over them.
pub fn step_context(
    given: serde_json::Map<String, serde_json::Value>,
) -> Result<StepContext, LoopbackError> {
    let mut step = serde_json::json!({
        "task_uuid": uuid::Uuid::new_v4(),
        "step_uuid": uuid::Uuid::new_v4(),
        "step_name": "loopback_step",
        "namespace": "loopback",
        "task_name": "loopback",
        "task_version": "1.0.0",
        "attempt": 1,
        "max_attempts": 3,
        "handler_callable": "Loopback::Handler",
        "initialization": {},
        "inputs": {},
        "task_context": {},
        "dependency_results": {},
        "timeout_seconds": null,
    });
    for (k, v) in given {
        match step.get_mut(&k) {
            Some(slot) => *slot = v,
            None => return Err(LoopbackError::UnknownField(k)),
        }
    }
    serde_json::from_value(step).map_err(|e| LoopbackError::InvalidStep(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::handlers::ffi_dispatch_channel::FfiStepResult;
    use std::sync::atomic::AtomicBool;

    fn fields(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn step_context_fills_defaults_and_names_unknown_fields() {
        let step =
            step_context(fields(serde_json::json!({"step_name": "s", "attempt": 2}))).unwrap();
        assert_eq!((step.step_name.as_str(), step.attempt), ("s", 2));
        assert_eq!(step.namespace, "loopback");
        let err = step_context(fields(serde_json::json!({"stepname": "s"}))).unwrap_err();
        assert_eq!(err.to_string(), "step.stepname: unknown field");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fed_steps_are_polled_completed_and_reach_the_sink() {
        let bad = Loopback::new(
            Handle::current(),
            fields(serde_json::json!({"dispatch_buffer_size": -1})),
        );
        assert!(matches!(bad, Err(LoopbackError::InvalidSetting { .. })));
        let loopback = Loopback::new(Handle::current(), serde_json::Map::new()).unwrap();
        loopback
            .feed(2, step_context(serde_json::Map::new()).unwrap())
            .unwrap();
        let never = AtomicBool::new(false);
        for _ in 0..2 {
            let ffi = loopback.ffi.clone();
            let polled = tokio::task::spawn_blocking(move || {
                ffi.poll(Duration::from_secs(5), &AtomicBool::new(false))
            })
            .await
            .unwrap()
            .expect("a fed step");
            let done = FfiStepResult {
                success: true,
                ..Default::default()
            };
            assert!(loopback.ffi.complete(polled.event_id, done));
        }
        tokio::time::timeout(Duration::from_secs(5), loopback.wait_for_completions(2))
            .await
            .unwrap();
        assert_eq!(loopback.completed_count(), 2);
        assert!(loopback.last_results().iter().all(|r| r.success));
        loopback.close();
        assert!(loopback.ffi.poll(Duration::ZERO, &never).is_none());
        assert!(matches!(
            loopback.feed(1, step_context(serde_json::Map::new()).unwrap()),
            Err(LoopbackError::Closed)
        ));
    }
}
