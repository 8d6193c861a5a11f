"""The handler contract over a LoopbackChannel (a real FfiDispatchChannel, no database):
every StepContext accessor, every outcome, every error type, as the engine records it."""

import asyncio

import pytest

import tasker_core
from tasker_core import PermanentError, RetryableError, StepContext, StepHandler, batches
from tasker_core.handler_pool import HandlerPool
from tasker_core.step_runner import StepRunner

STEP = {
    "task_context": {"order_id": 42, "items": [1, 2]},
    "initialization": {"strict": True},
    "dependency_results": {"validate": {"ok": True}, "process_batch_001": {"n": 2}, "process_batch_000": {"n": 1},
                           "process_batch_010": {"n": 11}, "other_000": {"n": 0}},
    "inputs": {"batch": {"batch_id": "001", "start_cursor": 100, "end_cursor": 200}},
    "step_name": "charge", "attempt": 2, "max_attempts": 3, "namespace": "shop", "task_name": "order",
    "task_version": "2.0.0", "timeout_seconds": 7,
}


def run_one(channel, callable_name, step=None, concurrency=1):
    """Feeds one step to a HandlerPool over the channel; returns the recorded result."""
    pool = HandlerPool(channel, StepRunner(tasker_core.handlers(), default_timeout=5), concurrency).start()
    try:
        channel.feed(1, {**(step or {}), "handler_callable": callable_name})
        assert channel.wait_for_completions(1, 10)
        return channel.last_result()
    finally:
        pool.stop(2)


def test_every_context_accessor(loopback):
    channel = loopback()
    channel.feed(1, {**STEP, "handler_callable": "handlers.Echo"})
    step = channel.poll(5)
    ctx = StepContext(step)
    assert ctx.task_context == {"order_id": 42, "items": [1, 2]}
    assert ctx.initialization == {"strict": True}
    assert ctx.dependency_result("validate") == {"ok": True}
    assert ctx.dependency_result("missing") is None
    assert ctx.batch == {"batch_id": "001", "start_cursor": 100, "end_cursor": 200}
    assert ctx.batch_results("process_batch") == [{"n": 1}, {"n": 2}, {"n": 11}]
    assert ctx.batch_results("nothing") == []
    assert (ctx.step_name, ctx.attempt, ctx.max_attempts) == ("charge", 2, 3)
    assert (ctx.namespace, ctx.task_name, ctx.task_version) == ("shop", "order", "2.0.0")
    assert ctx.timeout_seconds == 7 and ctx.handler_callable == "handlers.Echo"
    assert len(ctx.task_uuid) == 36 and len(ctx.step_uuid) == 36 and len(ctx.event_id) == 36
    assert not ctx.last_attempt
    assert "charge" in repr(ctx)
    result = StepRunner(tasker_core.handlers(), 5).run(step)
    assert channel.complete(step["event_id"], result) is True
    assert channel.wait_for_completions(1, 5)
    recorded = channel.last_result()
    assert recorded["success"] is True
    assert recorded["result"]["step_name"] == "charge"
    assert recorded["result"]["self_initialization"] == {"strict": True}
    assert recorded["metadata"]["custom"] == {"handler": "echo"}


def test_success_with_a_plain_value_and_with_outcomes(loopback):
    assert run_one(loopback(), "handlers.Add", {"task_context": {"value": 1}, "initialization": {"add": 2}})["result"] == 3
    r = StepHandler.success({"route": "m"}, next_steps=["manager_approval"]).to_native()
    assert r == {"success": True, "result": {"route": "m"}, "next_steps": ["manager_approval"]}
    r = StepHandler.success({"total": 250}, batches=batches.ranges(total=250, size=100)).to_native()
    assert r["batches"] == [{"batch_id": "000", "start_cursor": 0, "end_cursor": 100},
                            {"batch_id": "001", "start_cursor": 100, "end_cursor": 200},
                            {"batch_id": "002", "start_cursor": 200, "end_cursor": 250}]
    assert batches.ranges(total=0, size=10) == []
    with pytest.raises(ValueError):
        batches.ranges(total=-1, size=10)


def test_failure_is_recorded_as_the_handler_says(loopback):
    r = run_one(loopback(), "handlers.Fails")
    assert r["success"] is False
    assert r["error"]["message"] == "bad input"
    assert r["error"]["error_type"] == "validation"
    assert r["error"]["retryable"] is False


def test_retryable_error_carries_retry_after_and_traceback(loopback):
    e = run_one(loopback(), "handlers.Retryable")["error"]
    assert (e["error_type"], e["retryable"], e["retry_after_ms"]) == ("handler_error", True, 5000)
    assert e["error_class"] == "RetryableError" and e["message"] == "gateway busy"
    assert any("handlers.py" in line for line in e["backtrace"])


def test_permanent_error_is_final_with_its_type(loopback):
    e = run_one(loopback(), "handlers.Permanent")["error"]
    assert (e["error_type"], e["retryable"], e["error_class"]) == ("payment_declined", False, "PermanentError")
    assert e["message"] == "card declined"


def test_other_exceptions_are_retryable_handler_errors_with_class_message_and_traceback(loopback):
    e = run_one(loopback(), "handlers.Boom")["error"]
    assert (e["error_type"], e["retryable"], e["error_class"]) == ("handler_error", True, "ValueError")
    assert e["message"] == "boom in helper"
    trace = "\n".join(e["backtrace"])
    assert "helper_that_raises" in trace and "ValueError: boom in helper" in trace


def test_unknown_callable_is_handler_not_found(loopback):
    e = run_one(loopback(), "nowhere.Missing")["error"]
    assert (e["error_type"], e["retryable"]) == ("handler_not_found", False)
    assert "nowhere.Missing" in e["message"]


def test_async_handler_runs_on_the_loop(loopback):
    r = run_one(loopback(), "handlers.Double", {"dependency_results": {"add": 21}})
    assert r["success"] is True and r["result"] == 42


def test_async_handler_timeout(loopback):
    e = run_one(loopback(), "handlers.AsyncForever", {"timeout_seconds": 1})["error"]
    assert (e["error_type"], e["retryable"]) == ("handler_timeout", True)


def test_registered_handlers_and_functions(loopback):
    @tasker_core.register_handler("Tests::Fn")
    def plain(ctx):
        return {"fn": ctx.step_name}

    class Named(StepHandler):
        async def call(self, ctx):
            await asyncio.sleep(0)
            return self.success("named")

    tasker_core.register_handler("Tests::Named", Named)
    assert run_one(loopback(), "Tests::Fn")["result"] == {"fn": "loopback_step"}
    assert run_one(loopback(), "Tests::Named")["result"] == "named"
    with pytest.raises(TypeError):
        tasker_core.register_handler("Tests::Bad", 42)


def test_errors_are_exceptions_with_their_fields():
    e = RetryableError("busy", retry_after=3, error_type="gateway")
    assert (e.message, e.retry_after, e.error_type) == ("busy", 3, "gateway")
    p = PermanentError("no")
    assert (p.message, p.error_type) == ("no", "handler_error")
    assert issubclass(tasker_core.TimeoutError, tasker_core.TaskerError)
    assert issubclass(tasker_core.ForkError, tasker_core.TaskerError)
    assert issubclass(tasker_core.HandlerNotFoundError, tasker_core.TaskerError)


def test_channel_refuses_unknown_and_duplicate_completions(loopback):
    channel = loopback()
    channel.feed(1, None)
    step = channel.poll(5)
    ok = {"success": True, "result": 1}
    assert channel.complete(step["event_id"], ok) is True
    assert channel.complete(step["event_id"], ok) is False
    assert channel.complete("00000000-0000-0000-0000-000000000000", ok) is False
    assert channel.metrics()["completions_refused"] == 2
    with pytest.raises(ValueError, match="event_id"):
        channel.complete("not-a-uuid", ok)
    with pytest.raises(TypeError, match="poll timeout"):
        channel.poll("soon")
    with pytest.raises(ValueError, match="poll timeout"):
        channel.poll(-1)
    with pytest.raises(tasker_core.ConversionError, match="unknown field"):
        channel.feed(1, {"stepname": "x"})
