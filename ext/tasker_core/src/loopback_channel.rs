//! TaskerCore::Native::LoopbackChannel: a real FfiDispatchChannel with no database behind
//! it (tasker-worker's Loopback). Steps are fed in from Ruby, results land in an in-memory
//! sink. Specs use it to test poll/complete, timeouts and starvation; the benchmark uses it
//! to time the FFI round trip.

use crate::error::NativeError;
use crate::helpers::channel::{complete_on, poll_channel};
use crate::helpers::convert::{count as count_arg, from_json, seconds, to_json};
use crate::helpers::nogvl::{wait, Waited};
use crate::helpers::runtime::{runtime, ProcessBound};
use crate::helpers::serialize::to_ruby;
use magnus::{function, method, prelude::*, RArray, RHash, RModule, Ruby, Value};
use std::sync::Arc;
use tasker_worker::ffi::{step_context, Loopback, MAX_FEED};
use tokio::runtime::Runtime;

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

struct Inner {
    runtime: Arc<Runtime>,
    loopback: Loopback,
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
        let overrides = match args.first() {
            Some(v) if !v.is_nil() => from_json(
                to_json(ruby, *v, "LoopbackChannel config")?,
                "LoopbackChannel config",
            )?,
            _ => serde_json::Map::new(),
        };
        let rt = runtime()?;
        let loopback = Loopback::new(rt.handle().clone(), overrides).map_err(NativeError::from)?;
        Ok(Self {
            inner: ProcessBound::new(Inner {
                runtime: rt,
                loopback,
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
        let given = if step.is_nil() {
            serde_json::Map::new()
        } else {
            from_json(to_json(ruby, step, "step")?, "step")?
        };
        let template = step_context(given).map_err(NativeError::from)?;
        Ok(inner
            .loopback
            .feed(count, template)
            .map_err(NativeError::from)?)
    }

    fn poll(ruby: &Ruby, rb_self: &Self, timeout: Value) -> Result<Option<RHash>, magnus::Error> {
        poll_channel(ruby, &rb_self.inner()?.loopback.ffi, timeout)
    }

    fn complete(
        ruby: &Ruby,
        rb_self: &Self,
        event_id: String,
        result: Value,
    ) -> Result<bool, magnus::Error> {
        complete_on(ruby, &rb_self.inner()?.loopback.ffi, event_id, result)
    }

    fn metrics(ruby: &Ruby, rb_self: &Self) -> Result<Value, magnus::Error> {
        to_ruby(ruby, &rb_self.inner()?.loopback.ffi.metrics())
    }

    /// Results that reached the sink (completions and sweeper timeouts).
    fn completed_count(rb_self: &Self) -> Result<u64, magnus::Error> {
        Ok(rb_self.inner()?.loopback.completed_count())
    }

    fn last_result(ruby: &Ruby, rb_self: &Self) -> Result<Option<Value>, magnus::Error> {
        let last = rb_self.inner()?.loopback.last_results().pop();
        last.map(|r| to_ruby(ruby, &r)).transpose()
    }

    fn last_results(ruby: &Ruby, rb_self: &Self) -> Result<RArray, magnus::Error> {
        let results = rb_self.inner()?.loopback.last_results();
        let out = ruby.ary_new_capa(results.len());
        for r in &results {
            out.push(to_ruby(ruby, r)?)?;
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
        let runtime = inner.runtime.clone();
        let loopback = &inner.loopback;
        let reached = wait(&runtime, timeout, loopback.wait_for_completions(count))?;
        Ok(matches!(reached, Waited::Done(())))
    }

    /// One sweeper pass now (the background sweeper also runs on its own period).
    fn sweep(rb_self: &Self) -> Result<(), magnus::Error> {
        rb_self.inner()?.loopback.ffi.sweep();
        Ok(())
    }

    fn is_stopped(rb_self: &Self) -> Result<bool, magnus::Error> {
        Ok(rb_self.inner()?.loopback.ffi.is_closed())
    }

    /// Stops the pump and the sweeper; pollers get nil once the buffer is empty.
    fn close(rb_self: &Self) -> Result<(), magnus::Error> {
        rb_self.inner()?.loopback.close();
        Ok(())
    }
}
