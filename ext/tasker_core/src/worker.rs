//! TaskerCore::Native::Worker: a WorkerCore dispatching to Ruby through the
//! FfiDispatchChannel, optionally with orchestration embedded in the same process.

use crate::error::NativeError;
use crate::helpers::channel::{complete_on, poll_channel};
use crate::helpers::convert::{from_ruby, seconds};
use crate::helpers::nogvl::{block_on, wait, Waited};
use crate::helpers::runtime::{runtime, ProcessBound};
use crate::helpers::serialize::to_ruby;
use magnus::{function, method, prelude::*, RHash, RModule, Ruby, Value};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tasker_orchestration::{OrchestrationCore, OrchestrationHandle};
use tasker_shared::config::ConfigOptions;
use tasker_shared::template::load_template_dirs;
use tasker_shared::TaskerConfig;
use tasker_worker::ffi::{FfiWorker, FfiWorkerOptions, WorkerStatus};
use tokio::runtime::Runtime;

/// Starting connects, registers templates and creates queues; this bounds all of it.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Beyond the caller's deadline, what the worker's own shutdown may still take (its
/// completion processor gets up to 30 s to record what was handed in).
const STOP_GRACE: Duration = Duration::from_secs(40);
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

pub fn define(ruby: &Ruby, native: RModule) -> Result<(), magnus::Error> {
    native.define_module_function("start_worker", function!(start_worker, 1))?;
    let class = native.define_class("Worker", ruby.class_object())?;
    class.undef_default_alloc_func();
    class.define_method("poll", method!(Worker::poll, 1))?;
    class.define_method("complete", method!(Worker::complete, 2))?;
    class.define_method("ffi_metrics", method!(Worker::ffi_metrics, 0))?;
    class.define_method("status", method!(Worker::status, 0))?;
    class.define_method("poll_event", method!(Worker::poll_event, 1))?;
    class.define_method("stop", method!(Worker::stop, 1))?;
    class.define_method("stopped?", method!(Worker::is_stopped, 0))?;
    class.define_method("worker_id", method!(Worker::worker_id, 0))?;
    class.define_method("config", method!(Worker::config, 0))?;
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartOptions {
    namespaces: Vec<String>,
    #[serde(default)]
    database_url: Option<String>,
    #[serde(default)]
    environment: Option<String>,
    #[serde(default)]
    config_dir: Option<PathBuf>,
    #[serde(default)]
    config: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    template_paths: Vec<PathBuf>,
    #[serde(default)]
    embedded_orchestration: bool,
    #[serde(default)]
    worker_id: Option<String>,
}

struct Inner {
    runtime: Arc<Runtime>,
    worker: Arc<FfiWorker>,
    config: TaskerConfig,
    /// Taken by `stop`, which shuts it down after the worker.
    orchestration: Mutex<Option<OrchestrationHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Garbage-collected without `stop`: shut down in the background rather than leave
        // the worker claiming steps nobody will run. Never blocks the GC.
        let orchestration = self
            .orchestration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = self.worker.take_for_shutdown() {
            let deadline = self.config.worker.shutdown_timeout();
            let orchestration_deadline = self.config.orchestration.shutdown_timeout();
            self.runtime.spawn(async move {
                handle.shutdown_within(deadline).await;
                if let Some(o) = orchestration {
                    o.shutdown(orchestration_deadline).await;
                }
            });
        }
    }
}

#[magnus::wrap(class = "TaskerCore::Native::Worker", free_immediately, size)]
pub struct Worker {
    inner: ProcessBound<Inner>,
}

/// `TaskerCore::Native.start_worker(options)`.
fn start_worker(ruby: &Ruby, options: Value) -> Result<Worker, magnus::Error> {
    let opts: StartOptions = from_ruby(ruby, options, "start_worker options")?;
    if opts.namespaces.is_empty() {
        return Err(NativeError::conversion(
            "start_worker options.namespaces: must name at least one namespace",
        )
        .into());
    }
    let config_options = ConfigOptions {
        database_url: opts.database_url.clone(),
        environment: opts.environment.clone(),
        config_dir: opts.config_dir.clone(),
        config: opts.config.clone(),
    };
    let environment = config_options.environment();
    let config = config_options.load().map_err(NativeError::from)?;
    let templates = if opts.template_paths.is_empty() {
        Vec::new()
    } else {
        load_template_dirs(&opts.template_paths).map_err(NativeError::from)?
    };
    let rt = runtime()?;
    let worker_config = config.clone();
    let options = FfiWorkerOptions {
        namespaces: opts.namespaces,
        templates: templates
            .iter()
            .map(|(_, t)| t.for_environment(&environment))
            .collect(),
        worker_id: opts.worker_id,
    };
    let embedded = opts.embedded_orchestration;
    let (worker, orchestration) =
        block_on(&rt, START_TIMEOUT, "starting the worker", async move {
            let config = worker_config;
            let (worker, pool) = FfiWorker::start(&config, options).await?;
            let orchestration = if embedded {
                Some(OrchestrationCore::new(pool, config).await.start())
            } else {
                None
            };
            Ok((worker, orchestration))
        })?;
    Ok(Worker {
        inner: ProcessBound::new(Inner {
            runtime: rt,
            worker: Arc::new(worker),
            config,
            orchestration: Mutex::new(orchestration),
        }),
    })
}

impl Worker {
    fn inner(&self) -> Result<&Inner, magnus::Error> {
        Ok(self
            .inner
            .get("TaskerCore::Native::Worker")
            .map_err(NativeError::from)?)
    }

    /// `poll(timeout_seconds)` -> Hash or nil.
    fn poll(ruby: &Ruby, rb_self: &Self, timeout: Value) -> Result<Option<RHash>, magnus::Error> {
        poll_channel(ruby, &rb_self.inner()?.worker.ffi, timeout)
    }

    /// `complete(event_id, result)` -> true/false; returns at once.
    fn complete(
        ruby: &Ruby,
        rb_self: &Self,
        event_id: String,
        result: Value,
    ) -> Result<bool, magnus::Error> {
        complete_on(ruby, &rb_self.inner()?.worker.ffi, event_id, result)
    }

    fn ffi_metrics(ruby: &Ruby, rb_self: &Self) -> Result<Value, magnus::Error> {
        to_ruby(ruby, &rb_self.inner()?.worker.ffi.metrics())
    }

    /// `status` -> Hash: the worker's own counters, or `running: false` once stopped.
    fn status(ruby: &Ruby, rb_self: &Self) -> Result<Value, magnus::Error> {
        let inner = rb_self.inner()?;
        let worker = inner.worker.clone();
        let status: Option<WorkerStatus> = match wait(&inner.runtime, STATUS_TIMEOUT, async move {
            worker.status().await
        })? {
            Waited::Done(s) => s,
            Waited::TimedOut => {
                return Err(NativeError::timeout("worker status did not arrive within 5 s").into())
            }
            Waited::Interrupted => {
                return Err(NativeError::interrupted("worker status was interrupted").into())
            }
        };
        let running = status.is_some();
        let mut value = match status {
            Some(s) => serde_json::to_value(s).map_err(|e| NativeError::native(e.to_string()))?,
            None => serde_json::json!({ "worker_id": inner.worker.worker_id }),
        };
        value["running"] = serde_json::json!(running);
        value["events_dropped"] = serde_json::json!(inner.worker.events_dropped());
        to_ruby(ruby, &value)
    }

    /// `poll_event(timeout_seconds)` -> the next `fast` domain event as a Hash; nil when none
    /// came within the timeout; false once the worker has stopped and every event has been
    /// taken.
    fn poll_event(ruby: &Ruby, rb_self: &Self, timeout: Value) -> Result<Value, magnus::Error> {
        let inner = rb_self.inner()?;
        let timeout = seconds(timeout, "poll_event timeout")?;
        let worker = inner.worker.clone();
        let got = wait(
            &inner.runtime,
            timeout,
            async move { worker.next_event().await },
        )?;
        match got {
            Waited::Done(Some(event)) => to_ruby(ruby, &event),
            Waited::Done(None) => Ok(ruby.qfalse().as_value()),
            // An interrupt's exception, if any, is raised by Ruby as this call returns.
            Waited::TimedOut | Waited::Interrupted => Ok(ruby.qnil().as_value()),
        }
    }

    /// `stop(timeout_seconds)`: stops claiming, lets Ruby finish what it polled until the
    /// deadline, records the results, hands back the rest, then stops embedded
    /// orchestration. False when already stopped.
    fn stop(rb_self: &Self, timeout: Value) -> Result<bool, magnus::Error> {
        let inner = rb_self.inner()?;
        let deadline = seconds(timeout, "stop timeout")?;
        let Some(handle) = inner.worker.take_for_shutdown() else {
            return Ok(false);
        };
        let orchestration = inner
            .orchestration
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let orchestration_deadline = inner
            .config
            .orchestration
            .shutdown_timeout()
            .min(deadline.max(Duration::from_secs(1)));
        // Spawned, so that an interrupted wait (a second Ctrl-C) leaves the shutdown running
        // instead of abandoning it half done.
        let done = inner.runtime.spawn(async move {
            handle.shutdown_within(deadline).await;
            if let Some(o) = orchestration {
                o.shutdown(orchestration_deadline).await;
            }
        });
        let limit = deadline + orchestration_deadline + STOP_GRACE;
        match wait(&inner.runtime, limit, done)? {
            Waited::Done(Ok(())) => Ok(true),
            Waited::Done(Err(e)) => Err(NativeError::worker(format!("worker shutdown failed: {e}")).into()),
            Waited::TimedOut => Err(NativeError::timeout(format!(
                "worker shutdown did not finish within {} s",
                limit.as_secs_f64()
            ))
            .into()),
            Waited::Interrupted => Err(NativeError::interrupted("waiting for the worker to stop was interrupted; it keeps stopping in the background").into()),
        }
    }

    /// True once `stop` has begun or the channel stopped handing out steps.
    fn is_stopped(rb_self: &Self) -> Result<bool, magnus::Error> {
        Ok(rb_self.inner()?.worker.is_stopped())
    }

    fn worker_id(rb_self: &Self) -> Result<String, magnus::Error> {
        Ok(rb_self.inner()?.worker.worker_id.clone())
    }

    /// The configuration the worker runs with, as a Hash.
    fn config(ruby: &Ruby, rb_self: &Self) -> Result<Value, magnus::Error> {
        to_ruby(ruby, &rb_self.inner()?.config)
    }
}
