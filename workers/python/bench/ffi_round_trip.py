"""Times the Python <-> Rust step round trip and the parallelism of Python handlers, and
prints a table. Nothing here touches a database.

    .venv/bin/python workers/python/bench/ffi_round_trip.py [steps]
    (after `maturin develop --release` in workers/python; bin/test's debug build is slower)

1. FFI round trip: one Python thread polls a LoopbackChannel (a real FfiDispatchChannel),
   runs a no-op handler through the same StepRunner the worker uses, and completes. Each
   step carries a realistic payload: a context of 20 keys and 2 dependency results. Steps
   are fed in chunks that are fully buffered before the clock runs, so the time is the
   Python thread's loop (and the runtime's completion work beside it), not the feeder.
2. The same loop over a plain queue.SimpleQueue (the step dict already built in Python):
   the floor no FFI channel can beat; a second floor builds each step's payload in Python
   (json.loads of the same payload), which the FFI path has to do too.
3. 20 steps sleeping 100 ms on 10 handler threads, against the ideal 0.2 s; and 20 async
   steps sleeping 100 ms on the one event loop, against the ideal 0.1 s.
"""

import json
import os
import queue
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("TASKER_LOG", "error")

import asyncio  # noqa: E402

import tasker_core  # noqa: E402
from tasker_core import StepHandler, register_handler  # noqa: E402
from tasker_core._native import LoopbackChannel  # noqa: E402
from tasker_core.handler_pool import HandlerPool  # noqa: E402
from tasker_core.step_runner import StepRunner  # noqa: E402

STEPS = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
WARMUP = 5_000
CHUNK = 10_000


def _value(i):
    return [i * 1000, f"value-{i}-{'x' * 12}", {"nested": i, "flag": i % 2 == 0}, [i, i + 1, i + 2]][i % 4]


CONTEXT = {f"key_{i}": _value(i) for i in range(1, 21)}
STEP = {
    "handler_callable": "Bench::Noop", "step_name": "bench_step", "task_context": CONTEXT,
    "dependency_results": {"validate": {"ok": True, "total": 25.0}, "reserve": {"reserved": [1, 2]}},
    "initialization": {"mode": "bench"},
}


@register_handler("Bench::Noop")
class Noop(StepHandler):
    def call(self, ctx):
        return self.success(None)


@register_handler("Bench::Sleep")
class Sleep(StepHandler):
    def call(self, ctx):
        time.sleep(0.1)
        return self.success(None)


@register_handler("Bench::AsyncSleep")
class AsyncSleep(StepHandler):
    async def call(self, ctx):
        await asyncio.sleep(0.1)
        return self.success(None)


def runner():
    return StepRunner(tasker_core.handlers(), default_timeout=30)


def ffi_round_trip(count):
    channel = LoopbackChannel({"dispatch_buffer_size": CHUNK})
    run = runner()
    timed = 0.0
    done = 0
    try:
        for i, n in enumerate([WARMUP] + [CHUNK] * (count // CHUNK) + [count % CHUNK]):
            if n == 0:
                continue
            channel.feed(n, STEP)
            while channel.metrics()["pending"] < n:
                time.sleep(0.005)
            started = time.perf_counter()
            for _ in range(n):
                step = channel.poll(5)
                if step is None:
                    raise RuntimeError("loopback poll timed out")
                if not channel.complete(step["event_id"], run.run(step)):
                    raise RuntimeError("completion refused")
            if i:
                timed += time.perf_counter() - started
            done += n
            if not channel.wait_for_completions(done, 30):
                raise RuntimeError("completions did not all arrive")
        return count / timed
    finally:
        channel.close()


def queue_floor(count, parse=False):
    run = runner()
    template = dict(STEP, event_id="00000000-0000-0000-0000-000000000000", attempt=1, max_attempts=3,
                    task_uuid="t", step_uuid="s", namespace="bench", task_name="bench", task_version="1.0.0",
                    inputs={}, timeout_seconds=None)
    steps, results = queue.SimpleQueue(), queue.SimpleQueue()
    for _ in range(count):
        steps.put(dict(template))
    payload = json.dumps({k: template[k] for k in ("task_context", "dependency_results", "initialization")})
    started = time.perf_counter()
    if parse:
        for _ in range(count):
            step = steps.get()
            step.update(json.loads(payload))
            results.put(run.run(step))
    else:
        for _ in range(count):
            results.put(run.run(steps.get()))
    return count / (time.perf_counter() - started)


def parallel(callable_name, concurrency):
    channel = LoopbackChannel()
    pool = HandlerPool(channel, runner(), concurrency).start()
    try:
        started = time.perf_counter()
        channel.feed(20, dict(STEP, handler_callable=callable_name))
        if not channel.wait_for_completions(20, 30):
            raise RuntimeError("sleeping steps did not finish")
        return time.perf_counter() - started
    finally:
        pool.stop(5)
        channel.close()


def main():
    ffi = ffi_round_trip(STEPS)
    floor = queue_floor(STEPS)
    parsed_floor = queue_floor(STEPS, parse=True)
    threads = parallel("Bench::Sleep", 10)
    loop = parallel("Bench::AsyncSleep", 10)
    print(f"Tasker Python FFI benchmark (Python {sys.version.split()[0]}, {STEPS} steps, "
          f"context {len(CONTEXT)} keys + 2 dependency results)")
    print(f"{'measure':<56} {'result':>14}")
    print("-" * 71)
    print(f"{'FFI round trip (LoopbackChannel, poll+run+complete)':<56} {ffi:>10.0f} steps/s")
    print(f"{'Python queue floor (get+run+put)':<56} {floor:>10.0f} steps/s")
    print(f"{'  same, payload built per step (json.loads)':<56} {parsed_floor:>10.0f} steps/s")
    print(f"{'FFI / floor':<56} {ffi / floor:>14.2f}")
    print(f"{'FFI / floor with payload built':<56} {ffi / parsed_floor:>14.2f}")
    print(f"{'20 x 100 ms sleeping steps, 10 threads':<56} {threads:>12.3f} s")
    print(f"{'  measured / ideal (0.2 s): 1.00 is perfect':<56} {threads / 0.2:>14.2f}")
    print(f"{'20 x 100 ms async steps, one event loop':<56} {loop:>12.3f} s")
    print(f"{'  measured / ideal (0.1 s): 1.00 is perfect':<56} {loop / 0.1:>14.2f}")


if __name__ == "__main__":
    main()
