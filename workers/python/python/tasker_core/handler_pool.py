"""Handler threads and the event loop: `concurrency` threads each poll a step (the GIL is
released while they wait, so the others run), run a sync handler, and hand the result
back; an async handler's step is handed to one asyncio loop instead, and the polling
thread goes straight back to polling. Works over anything with poll(timeout) /
complete(event_id, result) / stopped(): the native Worker, or a LoopbackChannel."""

import asyncio
import logging
import threading
import time

from .errors import ConversionError, ForkError, TaskerError
from .step_runner import invalid_result

log = logging.getLogger("tasker_core")

# How long an idle thread waits per poll before looking at the stop flag again.
POLL_TIMEOUT = 0.1


class EventLoop:
    """One asyncio loop on its own thread for the async handlers."""

    def __init__(self, name="tasker-asyncio"):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self, timeout):
        """Cancels what still runs after `timeout` seconds, then stops the loop."""
        async def drain():
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            if pending:
                _, still = await asyncio.wait(pending, timeout=timeout)
                for t in still:
                    t.cancel()
        if self._thread.is_alive():
            try:
                asyncio.run_coroutine_threadsafe(drain(), self.loop).result(timeout + 1)
            except Exception:  # noqa: BLE001  stopping anyway
                pass
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout + 1)


class HandlerPool:
    def __init__(self, channel, runner, concurrency, name="tasker-handler"):
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:
            raise ValueError(f"concurrency must be a positive int, got {concurrency!r}")
        self.channel = channel
        self.runner = runner
        self.concurrency = concurrency
        self.name = name
        self._stopping = threading.Event()
        self._threads = []
        self._loop = None
        self._async_in_flight = 0
        self._lock = threading.Lock()

    def start(self):
        self._loop = EventLoop(f"{self.name}-asyncio").start()
        self._threads = [
            threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for t in self._threads:
            t.start()
        return self

    def alive_threads(self):
        return sum(1 for t in self._threads if t.is_alive())

    def request_stop(self):
        """Threads stop polling and exit after the step they are on."""
        self._stopping.set()

    def stop(self, timeout):
        """Stops and waits up to `timeout` seconds for the threads and the loop. Threads
        still inside a handler are left (they are daemon threads): a worker's stop has
        handed their steps back by then."""
        self.request_stop()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(deadline - time.monotonic(), 0))
            if t.is_alive():
                log.warning("%s still running a handler at the stop deadline; leaving it", t.name)
        if self._loop is not None:
            self._loop.stop(timeout)
        self._threads = []

    def _work(self):
        while not self._stopping.is_set():
            step = self._poll()
            if step is None:
                if self._stopped():
                    break
                continue
            try:
                self._run_step(step)
            except Exception as e:  # noqa: BLE001  the thread must outlive any one step
                log.error("%s: step %s could not be run or completed: %s: %s",
                          threading.current_thread().name, step.get("step_name"), type(e).__name__, e)

    def _stopped(self):
        try:
            return self.channel.stopped()
        except ForkError:
            return True

    def _poll(self):
        try:
            return self.channel.poll(POLL_TIMEOUT)
        except ForkError:
            self._stopping.set()
            return None
        except TaskerError as e:
            # Keep the thread: a transient failure must not silently shrink the pool.
            log.error("%s: poll failed: %s: %s", threading.current_thread().name, type(e).__name__, e)
            self._stopping.wait(POLL_TIMEOUT)
            return None

    def _run_step(self, step):
        if self.runner.is_async(step):
            future = self._loop.submit(self.runner.run_async(step))
            future.add_done_callback(lambda f, s=step: self._async_done(s, f))
            return
        self._complete(step, self.runner.run(step))

    def _async_done(self, step, future):
        try:
            result = future.result()
        except BaseException as e:  # noqa: BLE001  cancelled with the loop, say
            result = {"success": False, "error": {
                "message": f"async handler ended without a result: {type(e).__name__}: {e}",
                "error_type": "handler_error", "retryable": True}}
        self._complete(step, result)

    def _complete(self, step, result):
        try:
            self.channel.complete(step["event_id"], result)
        except ConversionError as e:
            self.channel.complete(step["event_id"], invalid_result(e))
        except ForkError:
            pass
