"""Parallelism and the channel's timeouts: the GIL is released while threads poll and while
handlers sleep, async handlers share one loop, a handler that never returns is failed by
the completion timeout, and the channel's metrics and starvation warnings report it."""

import time

import tasker_core
from tasker_core.handler_pool import HandlerPool
from tasker_core.step_runner import StepRunner
from handlers import Forever

# Stated in the issue: within 1.3 x the ideal wall time.
SLACK = 1.3


def timed(channel, callable_name, count, concurrency):
    pool = HandlerPool(channel, StepRunner(tasker_core.handlers(), 30), concurrency).start()
    try:
        # Warm up the pool and the import of the handler module.
        channel.feed(1, {"handler_callable": "handlers.Add", "task_context": {"value": 0}})
        assert channel.wait_for_completions(1, 10)
        started = time.monotonic()
        channel.feed(count, {"handler_callable": callable_name, "initialization": {"ms": 100}})
        assert channel.wait_for_completions(count + 1, 30)
        return time.monotonic() - started
    finally:
        pool.stop(2)


def test_20_sleeping_steps_on_10_threads_within_1_3_x_ideal(loopback):
    took = timed(loopback(), "handlers.Sleep", 20, 10)
    ideal = 0.2
    print(f"\n20 x 100 ms sync steps, 10 threads: {took:.3f} s, ratio to ideal {took / ideal:.2f}")
    assert took <= ideal * SLACK, f"{took:.3f} s is more than {SLACK} x the ideal {ideal} s"


def test_20_async_sleeping_steps_on_one_loop_within_1_3_x_ideal(loopback):
    took = timed(loopback(), "handlers.AsyncSleep", 20, 1)
    ideal = 0.1
    print(f"\n20 x 100 ms async steps, one loop: {took:.3f} s, ratio to ideal {took / ideal:.2f}")
    assert took <= ideal * SLACK, f"{took:.3f} s is more than {SLACK} x the ideal {ideal} s"


def test_handler_that_never_returns_hits_the_completion_timeout(loopback, caplog):
    channel = loopback(completion_timeout_ms=300, timeout_grace_ms=50, starvation_warning_threshold_ms=100)
    pool = HandlerPool(channel, StepRunner(tasker_core.handlers(), 30), 1).start()
    Forever.release.clear()
    try:
        # timeout_seconds 0: the step's own deadline is the grace, so completion_timeout_ms
        # decides.
        channel.feed(1, {"handler_callable": "handlers.Forever", "timeout_seconds": 0})
        assert channel.wait_for_completions(1, 10)
        error = channel.last_result()["error"]
        assert error["error_type"] == "ffi_completion_timeout"
        assert error["retryable"] is True
        metrics = channel.metrics()
        assert metrics["timeouts"] == 1 and metrics["in_process"] == 0
        # The late result, when the handler finally returns, is refused, not recorded twice.
        Forever.release.set()
        deadline = time.monotonic() + 5
        while channel.metrics()["completions_refused"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert channel.metrics()["completions_refused"] == 1
        assert channel.completed_count() == 1
    finally:
        Forever.release.set()
        pool.stop(2)


def test_unpolled_steps_are_reported_starving(loopback):
    channel = loopback(starvation_warning_threshold_ms=50)
    channel.feed(3, None)
    deadline = time.monotonic() + 5
    while channel.metrics()["pending"] < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    channel.sweep()
    metrics = channel.metrics()
    assert metrics["pending"] == 3
    assert metrics["starving"] == 3
    assert metrics["oldest_pending_age_ms"] >= 50


def test_poll_releases_the_gil(loopback):
    """A thread blocked in poll does not hold up Python code on another thread."""
    import threading

    channel = loopback()
    done = threading.Event()
    t = threading.Thread(target=lambda: (channel.poll(1.0), done.set()))
    started = time.monotonic()
    t.start()
    n = 0
    while not done.is_set() and time.monotonic() - started < 0.5:
        n += 1
    t.join()
    assert n > 10_000, f"only {n} iterations ran beside a waiting poll"
