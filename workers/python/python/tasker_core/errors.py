"""Errors. TaskerError and its native subclasses (ConfigError, DatabaseError, TemplateError,
ConversionError, WorkerError, ForkError, TimeoutError, ...) come from the extension; these
are raised by the Python library itself or by handlers."""

from ._native import (  # noqa: F401  (re-exported)
    ConfigError,
    ConversionError,
    DatabaseError,
    ForkError,
    InvalidContextError,
    InvalidStateError,
    NotFoundError,
    TaskerError,
    TemplateError,
    TemplateNotFoundError,
    TimeoutError,
    WorkerError,
)


class HandlerNotFoundError(TaskerError):
    """A handler named by a template cannot be imported or found."""


class ConfigurationError(TaskerError):
    """Options that cannot work (bad values)."""


class RetryableError(Exception):
    """Raised by a handler: the step failed and may be tried again, no sooner than
    `retry_after` seconds when given."""

    def __init__(self, message="retryable failure", retry_after=None, error_type="handler_error"):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.error_type = error_type


class PermanentError(Exception):
    """Raised by a handler: the step failed for good; the task is blocked whatever the
    template's retry settings."""

    def __init__(self, message="permanent failure", error_type="handler_error"):
        super().__init__(message)
        self.message = message
        self.error_type = error_type
