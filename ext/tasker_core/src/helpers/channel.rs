//! The poll/complete protocol over an FfiDispatchChannel, shared by
//! TaskerCore::Native::Worker and TaskerCore::Native::LoopbackChannel.

use super::convert::{polled_step, seconds, to_json, uuid};
use super::nogvl;
use magnus::{RHash, Ruby, Value};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tasker_worker::ffi::{FfiDispatchChannel, FfiError, FfiStepResult, PolledStep};

/// Never set: the GVL-holding attempt in `poll_channel` does not wait, so it needs no
/// interrupt.
static NOT_INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Takes a ready step at once if there is one; otherwise waits up to `timeout` with the GVL
/// released. Releasing and retaking the GVL costs tens of microseconds on Ruby 3.1, so a
/// busy worker mostly takes the first path. A step taken just as Ruby interrupts the
/// waiting thread is failed (retryably) at once instead of waiting for the completion
/// timeout.
pub fn poll_channel(
    ruby: &Ruby,
    ffi: &Arc<FfiDispatchChannel>,
    timeout: Value,
) -> Result<Option<RHash>, magnus::Error> {
    let timeout = seconds(timeout, "poll timeout")?;
    if let Some(step) = ffi.poll(Duration::ZERO, &NOT_INTERRUPTED) {
        return polled_step(ruby, &step).map(Some);
    }
    if timeout.is_zero() {
        return Ok(None);
    }
    let channel = ffi.clone();
    let outcome = nogvl::run(move |interrupt| channel.poll(timeout, interrupt.flag()))?;
    let step: Option<PolledStep> = outcome.value.flatten();
    if let Some(pending) = outcome.pending {
        if let Some(step) = step {
            ffi.complete(step.event_id, interrupted_result());
        }
        return Err(pending);
    }
    step.map(|s| polled_step(ruby, &s)).transpose()
}

fn interrupted_result() -> FfiStepResult {
    FfiStepResult {
        success: false,
        result: serde_json::Value::Null,
        metadata: serde_json::Value::Null,
        error: Some(FfiError {
            message:
                "the Ruby thread that polled this step was interrupted before running its handler"
                    .into(),
            error_type: Some("handler_error".into()),
            retryable: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Hands a Ruby result to the channel; false for unknown, duplicate or late event ids.
pub fn complete_on(
    ruby: &Ruby,
    ffi: &FfiDispatchChannel,
    event_id: String,
    result: Value,
) -> Result<bool, magnus::Error> {
    let id = uuid(&event_id, "event_id")?;
    let parsed: FfiStepResult =
        super::convert::from_json(to_json(ruby, result, "result")?, "result")?;
    Ok(ffi.complete(id, parsed))
}
