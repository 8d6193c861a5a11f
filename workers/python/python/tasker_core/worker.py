"""A worker process's Python side: the native worker core claims steps for `namespaces`
and hands them to `concurrency` handler threads (async handlers to one asyncio loop); with
orchestration="embedded" the process also runs orchestration.

    Worker.start(namespaces=["ecommerce"], concurrency=10, orchestration="embedded")
    ...
    Worker.stop()   # drains in-flight steps
"""

import atexit
import logging
import os
import signal
import threading

from . import _native
from .configuration import configuration
from .errors import ConfigurationError, ForkError, HandlerNotFoundError, WorkerError
from .events import Dispatcher, events
from .handler_pool import HandlerPool
from .handler_registry import handlers
from .step_runner import StepRunner

log = logging.getLogger("tasker_core")

CONCURRENCY_KEY = "worker.mpsc_channels.handler_dispatch.max_concurrent_handlers"
ORCHESTRATION_MODES = ("embedded", "external")
# After the native stop returns, how long handler threads get to notice and exit.
THREAD_JOIN_TIMEOUT = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


def check_concurrency(value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"concurrency: expected an int, got {type(value).__name__}")
    if not 1 <= value <= _native.MAX_CONCURRENCY:
        raise ValueError(f"concurrency: expected 1 to {_native.MAX_CONCURRENCY}, got {value}")
    return value


def check_timeout(value, what):
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what}: expected a number of seconds, got {type(value).__name__}")
    if not 0 <= value <= _native.MAX_TIMEOUT_SECONDS:  # NaN fails this too
        raise ValueError(f"{what}: expected 0 to {_native.MAX_TIMEOUT_SECONDS} seconds, got {value}")
    return value


class Worker:
    _lock = threading.Lock()
    _current = None

    # ---- the process-wide worker -------------------------------------------------------

    @classmethod
    def start(cls, namespaces=None, concurrency=10, orchestration="external", trap_signals=True):
        """Starts the process-wide worker; raises WorkerError if one is already running."""
        with cls._lock:
            if cls._current is not None and cls._current.running:
                raise WorkerError("a tasker_core Worker is already running; stop it first")
            worker = cls(namespaces=namespaces, concurrency=concurrency,
                         orchestration=orchestration, trap_signals=trap_signals)
            cls._current = worker._start()
            return worker

    @classmethod
    def stop(cls, timeout=None):
        """Drains and stops the process-wide worker. False when none was running."""
        worker = cls._current
        if worker is None:
            return False
        return worker.shutdown(timeout=timeout)

    @classmethod
    def current(cls):
        return cls._current

    @classmethod
    def is_running(cls):
        return cls._current is not None and cls._current.running

    # ---- one worker ---------------------------------------------------------------------

    def __init__(self, namespaces=None, concurrency=10, orchestration="external", trap_signals=True,
                 config=None, registry=None, event_registry=None):
        if orchestration not in ORCHESTRATION_MODES:
            raise ConfigurationError(f"orchestration must be one of {ORCHESTRATION_MODES}, got {orchestration!r}")
        self.namespaces = [str(n) for n in namespaces] if namespaces is not None else None
        self.concurrency = check_concurrency(concurrency)
        self.orchestration = orchestration
        self._trap_signals = trap_signals
        self._config = config or configuration()
        self._registry = registry or handlers()
        self._events = event_registry or events()
        self._state = "new"
        self._state_cv = threading.Condition()
        self._previous_traps = None
        # Handlers to put back once the main thread runs again (see _restore_traps).
        self._pending_restore = None
        self.started_in = None
        self.templates = []

    def _start(self):
        """Loads templates, checks every handler they name for the served namespaces can be
        found, registers the templates, starts the native worker and the handler threads."""
        paths = [p for p in self._config.template_paths() if os.path.exists(p)]
        self.templates = _native.load_templates(paths, self._config.resolved_environment()) if paths else []
        if self.namespaces is None:
            self.namespaces = sorted({t["template"]["namespace"] for t in self.templates})
        if not self.namespaces:
            raise ConfigurationError(
                "no namespaces to serve: pass namespaces= or put templates on the template path "
                f"({':'.join(self._config.template_paths())})")
        self._check_handlers()
        options = self._config.native_options()
        overrides = dict(options.get("config", {}))
        overrides.setdefault(CONCURRENCY_KEY, self.concurrency)
        options.update(namespaces=self.namespaces, template_paths=paths,
                       embedded_orchestration=self.orchestration == "embedded", config=overrides)
        self._native = _native.start_worker(options)
        self.started_in = os.getpid()
        try:
            config = self._native.config()
            self._shutdown_timeout = config["worker"]["shutdown_timeout_ms"] / 1000.0
            default_timeout = config["worker"]["mpsc_channels"]["handler_dispatch"]["handler_timeout_ms"] / 1000.0
            runner = StepRunner(self._registry, default_timeout=default_timeout)
            self._pool = HandlerPool(self._native, runner, self.concurrency).start()
            self._dispatcher = Dispatcher(self._native, self._events).start()
        except BaseException:
            self._native.stop(0)
            raise
        with self._state_cv:
            self._state = "running"
        if self._trap_signals:
            self._install_traps()
        return self

    @property
    def running(self):
        with self._state_cv:
            return self._state == "running" and self.started_in == os.getpid()

    def shutdown(self, timeout=None):
        """Stops claiming steps, lets the handlers finish what they hold (until `timeout`
        seconds, default worker.shutdown_timeout_ms), records their results, hands the rest
        back to the queue, then stops embedded orchestration. False if not running. In a
        process forked after the worker started, raises ForkError: the worker is the
        parent's."""
        check_timeout(timeout, "stop timeout")
        if self.started_in is not None and self.started_in != os.getpid():
            raise ForkError(
                f"this worker was started in process {self.started_in} and cannot be used in forked "
                f"process {os.getpid()}; start a new one after fork")
        with self._state_cv:
            if self._state != "running":
                return False
            self._state = "stopping"
        timeout = self._shutdown_timeout if timeout is None else timeout
        self._pool.request_stop()
        try:
            self._native.stop(timeout)
        finally:
            self._pool.stop(THREAD_JOIN_TIMEOUT)
            self._dispatcher.stop()
            self._restore_traps()
            with self._state_cv:
                self._state = "stopped"
                self._state_cv.notify_all()
        return True

    def wait(self, timeout=None):
        """Blocks until the worker has stopped (by shutdown, or SIGTERM/SIGINT when
        trapped), or `timeout` seconds pass. True when stopped."""
        with self._state_cv:
            # Bounded waits keep the main thread responsive to signals.
            remaining = timeout
            while self._state != "stopped":
                step = 0.5 if remaining is None else min(0.5, remaining)
                if step <= 0:
                    return False
                self._state_cv.wait(step)
                if remaining is not None:
                    remaining -= step
        self._restore_traps()
        return True

    def status(self):
        status = self._native.status()
        status["handler_threads_alive"] = self._pool.alive_threads() if self._pool else 0
        return status

    def ffi_metrics(self):
        return self._native.ffi_metrics()

    @property
    def worker_id(self):
        return self._native.worker_id()

    def _check_handlers(self):
        missing = []
        for entry in self.templates:
            t = entry["template"]
            if t["namespace"] not in self.namespaces:
                continue
            for s in t["steps"]:
                callable_name = s["handler"]["callable"]
                try:
                    found = self._registry.resolve(callable_name)
                except Exception as e:  # noqa: BLE001  the handler module itself is broken
                    raise HandlerNotFoundError(
                        f"importing {callable_name} (step '{s['name']}' of {t['namespace']}/{t['name']}@{t['version']}, "
                        f"{entry['path']}) raised {type(e).__name__}: {e}") from e
                if found is None:
                    missing.append(f"  {callable_name} (step '{s['name']}' of "
                                   f"{t['namespace']}/{t['name']}@{t['version']}, {entry['path']})")
        if missing:
            raise HandlerNotFoundError(
                f"no handler found for {len(missing)} step(s) in namespaces {', '.join(self.namespaces)}:\n"
                + "\n".join(missing)
                + "\nGive each callable as an import path (package.module.Class) or call tasker_core.register_handler.")

    def _install_traps(self):
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set signal handlers

        def on_signal(signum, _frame):
            # A signal handler must not block: stop from a fresh thread.
            threading.Thread(target=self.shutdown, name="tasker-stop", daemon=True).start()

        self._previous_traps = {sig: signal.signal(sig, on_signal) for sig in SIGNALS}

    def _restore_traps(self):
        traps = self._previous_traps or self._pending_restore
        self._previous_traps = None
        if not traps:
            return
        if threading.current_thread() is not threading.main_thread():
            # signal.signal only works on the main thread: wait() puts them back there.
            self._pending_restore = traps
            return
        self._pending_restore = None
        for sig, handler in traps.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def _forked_child():
    # Another thread may have held the lock at the fork; the child has only this thread.
    # The parent's worker stays Worker.current(): using it raises ForkError, and it is
    # never stopped at exit here (`running` is False in this process).
    Worker._lock = threading.Lock()


os.register_at_fork(after_in_child=_forked_child)


@atexit.register
def _stop_at_exit():
    """A script that ends without Worker.stop still hands its in-flight steps back rather
    than leaving them to the lease timeout."""
    worker = Worker._current
    if worker is not None and worker.running:
        try:
            worker.shutdown()
        except Exception as e:  # noqa: BLE001
            log.error("stopping the worker at exit: %s", e)
