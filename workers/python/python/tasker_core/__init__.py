"""Tasker workers in Python: step handlers served by the embedded Rust worker core through
the same FfiDispatchChannel the Ruby gem uses.

    from tasker_core import StepHandler, Worker, Client, RetryableError, PermanentError, batches
"""

from . import _native, batches
from .client import Client
from .configuration import configuration, configure, reset_configuration
from .errors import (
    ConfigError,
    ConfigurationError,
    ConversionError,
    DatabaseError,
    ForkError,
    HandlerNotFoundError,
    InvalidContextError,
    InvalidStateError,
    NotFoundError,
    PermanentError,
    RetryableError,
    TaskerError,
    TemplateError,
    TemplateNotFoundError,
    TimeoutError,
    WorkerError,
)
from .events import Event, subscribe, unsubscribe
from .handler_registry import handlers, register_handler
from .step_context import StepContext
from .step_handler import StepHandler, StepResult
from .task import Step, Task
from .worker import Worker

VERSION = _native.VERSION
__version__ = VERSION

__all__ = [
    "Client", "ConfigError", "ConfigurationError", "ConversionError", "DatabaseError", "Event",
    "ForkError", "HandlerNotFoundError", "InvalidContextError", "InvalidStateError", "NotFoundError",
    "PermanentError", "RetryableError", "Step", "StepContext", "StepHandler", "StepResult", "Task",
    "TaskerError", "TemplateError", "TemplateNotFoundError", "TimeoutError", "VERSION", "Worker",
    "WorkerError", "batches", "configuration", "configure", "handlers", "register_handler",
    "reset_configuration", "subscribe", "unsubscribe",
]
