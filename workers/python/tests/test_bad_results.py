"""Results that cannot be recorded (no JSON form, NaN, a cycle, too deep) fail their step
permanently as invalid_result naming the problem, and never crash the worker."""

import pytest

import tasker_core
from tasker_core.handler_pool import HandlerPool
from tasker_core.step_runner import StepRunner

CASES = {
    "nan": "result.result.ratio: NaN is not a JSON number",
    "infinity": "result.result[1]: Infinity is not a JSON number",
    "cycle": "result.result.self: a cyclic dict (it contains itself)",
    "object": "result.result.when: a datetime is not a JSON value",
    "key": "result.result[1]: a int cannot be a JSON object key",
    "bigint": "result.result.n: the int 1180591620717411303424 does not fit in 64 bits",
    "deep": "nested deeper than 64 levels",
    "retry_after": "retry_after_seconds",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_result_is_a_clear_invalid_result(loopback, kind):
    channel = loopback()
    pool = HandlerPool(channel, StepRunner(tasker_core.handlers(), 5), 2).start()
    try:
        channel.feed(1, {"handler_callable": "handlers.BadResult", "initialization": {"kind": kind}})
        assert channel.wait_for_completions(1, 10)
        error = channel.last_result()["error"]
        assert error["error_type"] == "invalid_result"
        assert error["retryable"] is False
        assert CASES[kind] in error["message"]
        # The pool is still serving.
        channel.feed(1, {"handler_callable": "handlers.Add", "task_context": {"value": 1}})
        assert channel.wait_for_completions(2, 10)
        assert channel.last_result()["result"] == 1
    finally:
        pool.stop(2)


def test_metadata_that_is_not_a_dict_is_invalid_result(loopback):
    channel = loopback()
    pool = HandlerPool(channel, StepRunner(tasker_core.handlers(), 5), 1).start()
    try:
        channel.feed(1, {"handler_callable": "handlers.BadResult", "initialization": {"kind": "metadata"}})
        assert channel.wait_for_completions(1, 10)
        error = channel.last_result()["error"]
        assert error["error_type"] == "invalid_result"
        assert "metadata" in error["message"]
    finally:
        pool.stop(2)
