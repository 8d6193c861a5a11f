"""Submits tasks and reads them back, against the configured database."""

import datetime

from . import _native
from .configuration import configuration
from .errors import TimeoutError
from .task import Task


def _uuid_of(task_or_uuid):
    return getattr(task_or_uuid, "task_uuid", None) or str(task_or_uuid)


def _iso8601(when):
    if isinstance(when, str):
        return when
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            raise ValueError("run_at: a naive datetime is ambiguous; give it a timezone")
        return when.astimezone(datetime.timezone.utc).isoformat()
    raise TypeError(f"run_at: expected a datetime or an ISO 8601 str, got {type(when).__name__}")


class Client:
    @staticmethod
    def create_task(namespace, name, version, context, idempotency_key=None, run_at=None):
        """Creates the task and returns it (Task.created is False when `idempotency_key`
        was already taken: the existing task is returned). `run_at`: no step starts before
        this time (a timezone-aware datetime or an ISO 8601 str)."""
        request = {"namespace": str(namespace), "name": str(name), "version": str(version), "context": context}
        if idempotency_key is not None:
            request["idempotency_key"] = str(idempotency_key)
        if run_at is not None:
            request["run_at"] = _iso8601(run_at)
        created = _native.create_task(request, configuration().native_options())
        return Task(created["task"], created=created["created"])

    @staticmethod
    def get_task(task_or_uuid):
        return Task(_native.get_task(_uuid_of(task_or_uuid), configuration().native_options()))

    @staticmethod
    def wait(task_or_uuid, timeout):
        """Returns the task once it is terminal; raises tasker_core.TimeoutError (naming the
        task's step states) after `timeout` seconds. Woken by the database when the task
        finishes; the GIL is released while it waits."""
        uuid = _uuid_of(task_or_uuid)
        task = Task(_native.wait_task(uuid, timeout, configuration().native_options()))
        if task.terminal:
            return task
        raise TimeoutError(f"task {uuid} ({task.namespace}/{task.name}) still {task.status} after {timeout} s: "
                           + ", ".join(repr(s) for s in task.steps))

    @staticmethod
    def cancel(task_or_uuid):
        """Cancels the task; returns it as it now stands."""
        uuid = _uuid_of(task_or_uuid)
        _native.cancel_task(uuid, configuration().native_options())
        return Client.get_task(uuid)
