"""Runs one polled step's handler and turns every way it can end into the result dict the
extension's complete takes. Never raises for anything a handler does."""

import asyncio
import traceback

from .errors import PermanentError, RetryableError
from .step_context import StepContext
from .step_handler import StepResult

BACKTRACE_LINES = 50


def invalid_result(error):
    """The failure sent when a handler's result cannot be recorded (a value with no JSON
    form, NaN, a cycle, a malformed result): final, since the same handler will produce it
    again."""
    return StepResult.failed(
        f"handler result could not be recorded: {error}", error_type="invalid_result",
        retryable=False, error_class=type(error).__name__,
    ).to_native()


def _backtrace(error):
    lines = []
    for chunk in traceback.format_exception(error):
        lines.extend(chunk.rstrip("\n").split("\n"))
    return lines[-BACKTRACE_LINES:]


def _failure_from(error, error_type, retryable, retry_after=None):
    return StepResult.failed(
        str(error), error_type=error_type or "handler_error", retryable=retryable,
        retry_after=retry_after, error_class=type(error).__qualname__, backtrace=_backtrace(error),
    )


def _outcome(value):
    return value if isinstance(value, StepResult) else StepResult.ok(result=value)


def _native(result):
    try:
        return result.to_native()
    except Exception as e:  # a StepResult built with values that cannot become a dict
        return invalid_result(e)


class StepRunner:
    """`default_timeout`: seconds an async handler may run when its step sets no
    timeout_seconds (the worker's handler_timeout_ms). A sync handler cannot be stopped
    from outside its thread; one that never returns is failed by the channel's completion
    timeout (ffi_completion_timeout)."""

    def __init__(self, registry, default_timeout=None):
        self.registry = registry
        self.default_timeout = default_timeout

    def entry(self, step):
        return self.registry.resolve(step["handler_callable"])

    def is_async(self, step):
        entry = self.entry(step)
        return entry is not None and entry.is_async

    def run(self, step):
        """Runs a sync handler on this thread."""
        context = StepContext(step)
        try:
            entry = self.entry(step)
            if entry is None:
                return _native(self._not_found(context))
            result = entry.build(context.initialization)(context)
            if asyncio.iscoroutine(result):
                # A sync-looking callable that returned a coroutine: run it here.
                result = asyncio.run(result)
            return _native(_outcome(result))
        except BaseException as e:  # noqa: BLE001  every ending of a handler is a result
            return _native(self._failure(e))

    async def run_async(self, step):
        """Runs an async handler on the worker's event loop, within its timeout."""
        context = StepContext(step)
        timeout = context.timeout_seconds or self.default_timeout
        try:
            entry = self.entry(step)
            if entry is None:
                return _native(self._not_found(context))
            call = entry.build(context.initialization)
            result = await asyncio.wait_for(call(context), timeout)
            return _native(_outcome(result))
        except asyncio.TimeoutError:
            return StepResult.failed(
                f"handler for step '{context.step_name}' exceeded its timeout of {round(timeout * 1000)} ms",
                error_type="handler_timeout", retryable=True,
            ).to_native()
        except asyncio.CancelledError:
            return StepResult.failed(
                f"handler for step '{context.step_name}' was cancelled (the worker is stopping?)",
                error_type="handler_error", retryable=True,
            ).to_native()
        except BaseException as e:  # noqa: BLE001
            return _native(self._failure(e))

    def _failure(self, e):
        if isinstance(e, RetryableError):
            return _failure_from(e, e.error_type, True, retry_after=e.retry_after)
        if isinstance(e, PermanentError):
            return _failure_from(e, e.error_type, False)
        return _failure_from(e, "handler_error", True)

    @staticmethod
    def _not_found(context):
        return StepResult.failed(
            f"no handler for callable '{context.handler_callable}' (step '{context.step_name}' of "
            f"{context.namespace}/{context.task_name}@{context.task_version}): give its import path "
            "(package.module.Class) or call tasker_core.register_handler",
            error_type="handler_not_found", retryable=False,
        )
