//! TaskerCore::Native::LoopbackChannel: a real FfiDispatchChannel with no database behind
//! it. Steps are fed in from Ruby, results land in an in-memory sink. Specs use it to test
//! poll/complete, timeouts and starvation; the benchmark uses it to time the FFI round trip.

use crate::channel::{complete_on, poll_channel};
use crate::convert::{count as count_arg, from_json, seconds, to_json, to_ruby_via_json};
use crate::error::NativeError;
use crate::nogvl::{wait, Waited};
use crate::runtime::{runtime, ProcessBound};
use chrono::Utc;
use magnus::{function, method, prelude::*, RArray, RHash, RModule, Ruby, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tasker_shared::config::{ConfigLoader, FfiDispatchConfig};
use tasker_shared::queue::QueueName;
use tasker_shared::StepExecutionResult;
use tasker_worker::worker::handlers::dispatch_service::CompletedStep;
use tasker_worker::worker::handlers::ffi_dispatch_channel::FfiDispatchChannel;
use tasker_worker::{DispatchedStep, StepContext};
use tokio::runtime::Runtime;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// How many recent results the sink keeps for inspection.
const KEEP_RESULTS: usize = 16;
/// The most steps one `feed` queues: a benchmark's worth, far below what would exhaust
/// memory or wrap the message ids.
const MAX_FEED: u64 = 10_000_000;

pub fn define(ruby: &Ruby, native: RModule) -> Result<(), magnus::Error> {
    let class = native.define_class("LoopbackChannel", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_singleton_method("new", function!(LoopbackChannel::new, -1))?;
    class.define_method("feed", method!(LoopbackChannel::feed, 2))?;
    class.define_method("poll", method!(LoopbackChannel::poll, 1))?;
    class.define_method("complete", method!(LoopbackChannel::complete, 2))?;
    class.define_method("metrics", method!(LoopbackChannel::metrics, 0))?;
    class.define_method(
        "completed_count",
        method!(LoopbackChannel::completed_count, 0),
    )?;
    class.define_method("last_result", method!(LoopbackChannel::last_result, 0))?;
    class.define_method("last_results", method!(LoopbackChannel::last_results, 0))?;
    class.define_method(
        "wait_for_completions",
        method!(LoopbackChannel::wait_for_completions, 2),
    )?;
    class.define_method("sweep", method!(LoopbackChannel::sweep, 0))?;
    class.define_method("close", method!(LoopbackChannel::close, 0))?;
    class.define_method("stopped?", method!(LoopbackChannel::is_stopped, 0))?;
    Ok(())
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
                let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
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

struct Inner {
    runtime: Arc<Runtime>,
    ffi: Arc<FfiDispatchChannel>,
    feed: Mutex<Option<mpsc::Sender<DispatchedStep>>>,
    sink: Arc<Sink>,
    shutdown: CancellationToken,
    queue: QueueName,
    next_msg_id: AtomicI64,
}

impl Inner {
    fn close(&self) {
        self.shutdown.cancel();
        self.feed.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.ffi.close();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

#[magnus::wrap(class = "TaskerCore::Native::LoopbackChannel", free_immediately, size)]
pub struct LoopbackChannel {
    inner: ProcessBound<Inner>,
}

impl LoopbackChannel {
    /// `LoopbackChannel.new(config = {})`: `config` holds FfiDispatchConfig keys
    /// (dispatch_buffer_size, completion_timeout_ms, starvation_warning_threshold_ms,
    /// callback_timeout_ms); unset keys take the shipped defaults.
    fn new(ruby: &Ruby, args: &[Value]) -> Result<Self, magnus::Error> {
        if args.len() > 1 {
            return Err(magnus::Error::new(
                ruby.exception_arg_error(),
                format!(
                    "wrong number of arguments (given {}, expected 0..1)",
                    args.len()
                ),
            ));
        }
        let (config, handler_timeout) = channel_config(ruby, args.first().copied())?;
        let rt = runtime()?;
        let (completion_tx, completion_rx) = mpsc::channel(config.dispatch_buffer_size);
        let (feed_tx, feed_rx) = mpsc::channel(config.dispatch_buffer_size);
        let sink = Arc::new(Sink::default());
        let shutdown = CancellationToken::new();
        let ffi = FfiDispatchChannel::new(
            config,
            handler_timeout,
            completion_tx,
            rt.handle().clone(),
            "loopback".into(),
        );
        rt.spawn(sink.clone().drain(completion_rx));
        rt.spawn(ffi.clone().pump(feed_rx));
        rt.spawn(ffi.clone().run_sweeper(shutdown.clone()));
        Ok(Self {
            inner: ProcessBound::new(Inner {
                runtime: rt,
                ffi,
                feed: Mutex::new(Some(feed_tx)),
                sink,
                shutdown,
                queue: QueueName::new("loopback").map_err(NativeError::native)?,
                next_msg_id: AtomicI64::new(1),
            }),
        })
    }

    fn inner(&self) -> Result<&Inner, magnus::Error> {
        Ok(self
            .inner
            .get("TaskerCore::Native::LoopbackChannel")
            .map_err(NativeError::from)?)
    }

    /// `feed(count, step)`: queues `count` copies of `step` (a Hash of StepContext fields;
    /// missing ones get defaults, each copy a fresh event id and step uuid) through the
    /// channel's pump. Returns at once; the copies flow in as the buffer makes room.
    fn feed(ruby: &Ruby, rb_self: &Self, count: Value, step: Value) -> Result<u64, magnus::Error> {
        let count = count_arg(count, "feed count", MAX_FEED)?;
        let inner = rb_self.inner()?;
        let template = step_context(ruby, step)?;
        let Some(tx) = inner.feed.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return Err(NativeError::worker("the loopback channel is closed").into());
        };
        let queue = inner.queue.clone();
        // MAX_FEED keeps these casts exact.
        let first = inner.next_msg_id.fetch_add(count as i64, Ordering::Relaxed);
        inner.runtime.spawn(async move {
            for i in 0..count {
                let mut context = template.clone();
                context.step_uuid = uuid::Uuid::new_v4();
                let step = DispatchedStep {
                    event_id: uuid::Uuid::now_v7(),
                    context: std::sync::Arc::new(context),
                    publishes_events: Vec::new(),
                    queue: queue.clone(),
                    msg_id: first + i as i64,
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

    fn poll(ruby: &Ruby, rb_self: &Self, timeout: Value) -> Result<Option<RHash>, magnus::Error> {
        poll_channel(ruby, &rb_self.inner()?.ffi, timeout)
    }

    fn complete(
        ruby: &Ruby,
        rb_self: &Self,
        event_id: String,
        result: Value,
    ) -> Result<bool, magnus::Error> {
        complete_on(ruby, &rb_self.inner()?.ffi, event_id, result)
    }

    fn metrics(ruby: &Ruby, rb_self: &Self) -> Result<Value, magnus::Error> {
        to_ruby_via_json(ruby, &rb_self.inner()?.ffi.metrics())
    }

    /// Results that reached the sink (completions and sweeper timeouts).
    fn completed_count(rb_self: &Self) -> Result<u64, magnus::Error> {
        Ok(rb_self.inner()?.sink.completed.load(Ordering::Acquire))
    }

    fn last_result(ruby: &Ruby, rb_self: &Self) -> Result<Option<Value>, magnus::Error> {
        let last = rb_self
            .inner()?
            .sink
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .back()
            .cloned();
        last.map(|r| to_ruby_via_json(ruby, &r)).transpose()
    }

    fn last_results(ruby: &Ruby, rb_self: &Self) -> Result<RArray, magnus::Error> {
        let results: Vec<StepExecutionResult> = rb_self
            .inner()?
            .sink
            .last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        let out = ruby.ary_new_capa(results.len());
        for r in &results {
            out.push(to_ruby_via_json(ruby, r)?)?;
        }
        Ok(out)
    }

    /// `wait_for_completions(count, timeout_seconds)` -> true once `count` results reached
    /// the sink, false at the timeout. The GVL is released while waiting.
    fn wait_for_completions(
        rb_self: &Self,
        count: Value,
        timeout: Value,
    ) -> Result<bool, magnus::Error> {
        let count = count_arg(count, "wait_for_completions count", u64::from(u32::MAX))?;
        let inner = rb_self.inner()?;
        let timeout = seconds(timeout, "wait_for_completions timeout")?;
        let sink = inner.sink.clone();
        let reached = wait(&inner.runtime, timeout, async move {
            loop {
                let arrived = sink.arrived.notified();
                if sink.completed.load(Ordering::Acquire) >= count {
                    return;
                }
                arrived.await;
            }
        })?;
        Ok(matches!(reached, Waited::Done(())))
    }

    /// One sweeper pass now (the background sweeper also runs on its own period).
    fn sweep(rb_self: &Self) -> Result<(), magnus::Error> {
        rb_self.inner()?.ffi.sweep();
        Ok(())
    }

    fn is_stopped(rb_self: &Self) -> Result<bool, magnus::Error> {
        Ok(rb_self.inner()?.ffi.is_closed())
    }

    /// Stops the pump and the sweeper; pollers get nil once the buffer is empty.
    fn close(rb_self: &Self) -> Result<(), magnus::Error> {
        rb_self.inner()?.close();
        Ok(())
    }
}

/// The channel's settings (base configuration, the given keys over them) and the handler
/// timeout of steps that set none.
fn channel_config(
    ruby: &Ruby,
    value: Option<Value>,
) -> Result<(FfiDispatchConfig, std::time::Duration), magnus::Error> {
    let overrides: serde_json::Map<String, serde_json::Value> = match value {
        Some(v) if !v.is_nil() => from_json(
            to_json(ruby, v, "LoopbackChannel config")?,
            "LoopbackChannel config",
        )?,
        _ => serde_json::Map::new(),
    };
    let mut loader = ConfigLoader::isolated(None, "loopback");
    for (key, value) in overrides {
        let value = value
            .as_u64()
            .and_then(|n| i64::try_from(n).ok())
            .map(toml::Value::Integer)
            .ok_or_else(|| {
                NativeError::argument(format!(
                    "LoopbackChannel config.{key}: expected a non-negative Integer below 2**63, got {value}"
                ))
            })?;
        loader = loader.set(&format!("worker.mpsc_channels.ffi_dispatch.{key}"), value);
    }
    let channels = loader
        .load()
        .map_err(NativeError::from)?
        .worker
        .mpsc_channels;
    Ok((
        channels.ffi_dispatch,
        channels.handler_dispatch.handler_timeout(),
    ))
}

/// A StepContext from a partial Hash: defaults first, the given fields over them.
fn step_context(ruby: &Ruby, value: Value) -> Result<StepContext, NativeError> {
    let given = if value.is_nil() {
        serde_json::Map::new()
    } else {
        from_json::<serde_json::Map<String, serde_json::Value>>(
            to_json(ruby, value, "step")?,
            "step",
        )?
    };
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
            None => return Err(NativeError::conversion(format!("step.{k}: unknown field"))),
        }
    }
    from_json(step, "step")
}
