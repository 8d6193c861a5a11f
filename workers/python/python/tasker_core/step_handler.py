"""Step handlers: subclass StepHandler and implement `call(self, ctx)` (or `async def call`)."""

_NO_METADATA = {}


class StepResult:
    """What a handler returns: built by StepHandler.success / StepHandler.failure."""

    __slots__ = ("success", "result", "metadata", "message", "error_type", "retryable",
                 "retry_after", "error_class", "backtrace", "next_steps", "batches")

    def __init__(self, success, result=None, metadata=_NO_METADATA, message=None, error_type=None,
                 retryable=None, retry_after=None, error_class=None, backtrace=None,
                 next_steps=None, batches=None):
        self.success = success
        self.result = result
        self.metadata = metadata
        self.message = message
        self.error_type = error_type
        self.retryable = retryable
        self.retry_after = retry_after
        self.error_class = error_class
        self.backtrace = backtrace
        self.next_steps = next_steps
        self.batches = batches

    @classmethod
    def ok(cls, result=None, metadata=_NO_METADATA, next_steps=None, batches=None):
        return cls(True, result=result, metadata=metadata, next_steps=next_steps, batches=batches)

    @classmethod
    def failed(cls, message, error_type="handler_error", retryable=True, retry_after=None,
               error_class=None, backtrace=None):
        return cls(False, message=message, error_type=error_type, retryable=retryable,
                   retry_after=retry_after, error_class=error_class, backtrace=backtrace)

    def to_native(self):
        """The dict the extension's complete takes (an FfiStepResult). Values are not
        checked here: the extension refuses what has no JSON form, naming it, and the step
        fails as invalid_result."""
        if self.success:
            out = {"success": True, "result": self.result}
            # Anything but a dict goes as it is, for the engine to refuse as invalid_result.
            if self.metadata is not None and not (isinstance(self.metadata, dict) and not self.metadata):
                out["metadata"] = self.metadata
            if self.next_steps is not None:
                out["next_steps"] = self.next_steps
            if self.batches is not None:
                out["batches"] = self.batches
            return out
        error = {
            "message": str(self.message),
            "error_type": str(self.error_type),
            "retryable": bool(self.retryable),
        }
        if self.error_class:
            error["error_class"] = self.error_class
        if self.backtrace:
            error["backtrace"] = self.backtrace
        if self.retry_after is not None:
            error["retry_after_seconds"] = self.retry_after
        return {"success": False, "error": error}

    def __repr__(self):
        if self.success:
            return f"<StepResult success result={self.result!r}>"
        return f"<StepResult failure {self.error_type} retryable={self.retryable} {self.message!r}>"


class StepHandler:
    """Subclass and implement `call(self, ctx)`; return self.success(...) or
    self.failure(...), or raise RetryableError / PermanentError. Any other exception fails
    the step retryably as handler_error carrying its class, message and traceback. A plain
    return value is taken as success(value).

    One instance is made per step, given the template's handler.initialization. `call` may
    be `async def`: it then runs on the worker's asyncio loop."""

    def __init__(self, initialization=None):
        self.initialization = initialization or {}

    def call(self, ctx):
        raise NotImplementedError(f"{type(self).__name__} must implement call(self, ctx)")

    @staticmethod
    def success(result=None, metadata=_NO_METADATA, next_steps=None, batches=None):
        """next_steps: (decision steps) the direct dependents to create; [] chooses none.
        batches: (batchable steps) one dict per batch, e.g. batches.ranges(...)."""
        return StepResult.ok(result=result, metadata=metadata, next_steps=next_steps, batches=batches)

    @staticmethod
    def failure(message, error_type="handler_error", retryable=True):
        return StepResult.failed(message, error_type=error_type, retryable=retryable)
