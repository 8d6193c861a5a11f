//! Module functions on TaskerCore::Native for tasks (what TaskerCore::Client calls): create,
//! read, wait for and cancel one. Each releases the GVL around its database work.

use crate::helpers::args::{arity, options};
use crate::helpers::client::client;
use crate::helpers::convert::{from_ruby, seconds, uuid_arg, MAX_TIMEOUT_SECONDS};
use crate::helpers::nogvl::block_on;
use crate::helpers::runtime::runtime;
use crate::helpers::serialize::to_ruby;
use crate::helpers::CALL_TIMEOUT;
use magnus::{function, prelude::*, RModule, Ruby, Value};
use tasker_orchestration::TaskRequest;

pub fn define(native: RModule) -> Result<(), magnus::Error> {
    native.define_module_function("create_task", function!(create_task, -1))?;
    native.define_module_function("get_task", function!(get_task, -1))?;
    native.define_module_function("wait_task", function!(wait_task, -1))?;
    native.define_module_function("cancel_task", function!(cancel_task, -1))?;
    Ok(())
}

/// `create_task({namespace:, name:, version:, context:, idempotency_key:}, options = nil)`:
/// `task_uuid`, `created` (false when the idempotency key was taken), `state`, and `task`:
/// the task with its steps, as `get_task` returns it.
fn create_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 1, 2, "create_task")?;
    let request: TaskRequest = from_ruby(ruby, args[0], "task request")?;
    let c = client(&options(ruby, args, 1)?)?;
    let rt = runtime()?;
    let value = block_on(&rt, CALL_TIMEOUT, "creating the task", async move {
        Ok(c.create(request).await?)
    })?;
    to_ruby(ruby, &value)
}

/// `get_task(task_uuid, options = nil)`: the task row, `terminal`, and its steps.
fn get_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 1, 2, "get_task")?;
    let id = uuid_arg(args[0], "task_uuid")?;
    let c = client(&options(ruby, args, 1)?)?;
    let rt = runtime()?;
    let task = block_on(&rt, CALL_TIMEOUT, "reading the task", async move {
        Ok(c.get(id).await?)
    })?;
    to_ruby(ruby, &task)
}

/// `wait_task(task_uuid, timeout_seconds, options = nil)`: waits, without the GVL, until the
/// task is terminal or the timeout passes (woken by the database, not by polling), then
/// returns it as `get_task` does.
fn wait_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 2, 3, "wait_task")?;
    let id = uuid_arg(args[0], "task_uuid")?;
    // Longer waits are cut to the waiter's maximum (a day) rather than refused: waiting
    // "as long as it takes" is a reasonable thing to ask.
    let timeout = match f64::try_convert(args[1]) {
        Ok(s) if s > MAX_TIMEOUT_SECONDS => tasker_shared::task_waiter::MAX_WAIT,
        _ => seconds(args[1], "wait_task timeout")?.min(tasker_shared::task_waiter::MAX_WAIT),
    };
    let c = client(&options(ruby, args, 2)?)?;
    let rt = runtime()?;
    let task = block_on(
        &rt,
        timeout + CALL_TIMEOUT,
        "waiting for the task",
        async move { Ok(c.wait(id, timeout).await?) },
    )?;
    to_ruby(ruby, &task)
}

/// `cancel_task(task_uuid, options = nil)`: the cancelled task.
fn cancel_task(ruby: &Ruby, args: &[Value]) -> Result<Value, magnus::Error> {
    arity(ruby, args, 1, 2, "cancel_task")?;
    let id = uuid_arg(args[0], "task_uuid")?;
    let c = client(&options(ruby, args, 1)?)?;
    let rt = runtime()?;
    let task = block_on(&rt, CALL_TIMEOUT, "cancelling the task", async move {
        Ok(c.cancel(id, "ruby").await?)
    })?;
    to_ruby(ruby, &task)
}
