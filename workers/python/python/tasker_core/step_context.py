"""What a handler is given for one step."""

import re

_EMPTY = {}


class StepContext:
    """The task's context, the parents' results, the template's handler initialization, and
    where the step stands. Reads the dict the extension's poll returns as it is asked."""

    __slots__ = ("_step",)

    def __init__(self, step):
        self._step = step

    @property
    def event_id(self):
        return self._step["event_id"]

    @property
    def task_uuid(self):
        return self._step["task_uuid"]

    @property
    def step_uuid(self):
        return self._step["step_uuid"]

    @property
    def step_name(self):
        return self._step["step_name"]

    @property
    def namespace(self):
        return self._step["namespace"]

    @property
    def task_name(self):
        return self._step["task_name"]

    @property
    def task_version(self):
        return self._step["task_version"]

    @property
    def attempt(self):
        return self._step["attempt"]

    @property
    def max_attempts(self):
        return self._step["max_attempts"]

    @property
    def handler_callable(self):
        return self._step["handler_callable"]

    @property
    def timeout_seconds(self):
        return self._step["timeout_seconds"]

    @property
    def initialization(self):
        """The template's handler.initialization."""
        return self._step.get("initialization") or _EMPTY

    @property
    def inputs(self):
        return self._step.get("inputs") or _EMPTY

    @property
    def task_context(self):
        """The task's JSON context (a dict)."""
        return self._step.get("task_context") or _EMPTY

    @property
    def dependency_results(self):
        """Each parent's result, by step name."""
        return self._step.get("dependency_results") or _EMPTY

    def dependency_result(self, name):
        """A parent step's result value; None when `name` is not a parent of this step (or
        is a branch its decision did not create)."""
        return self.dependency_results.get(str(name))

    @property
    def batch(self):
        """In a batch worker: its batch, the dict its batchable step returned for it."""
        return self.inputs.get("batch")

    def batch_results(self, worker_name):
        """In a convergence step: the results of the batch worker's copies (<worker>_000,
        _001, ...) in batch order; [] when no batches were created."""
        pattern = re.compile(r"\A" + re.escape(str(worker_name)) + r"_(\d+)\Z")
        found = []
        for name, result in self.dependency_results.items():
            m = pattern.match(name)
            if m:
                found.append((int(m.group(1)), result))
        return [r for _, r in sorted(found, key=lambda p: p[0])]

    @property
    def last_attempt(self):
        return self.attempt >= self.max_attempts

    def to_dict(self):
        return dict(self._step)

    def __repr__(self):
        return (f"<tasker_core.StepContext {self.namespace}/{self.task_name} step={self.step_name} "
                f"attempt={self.attempt}/{self.max_attempts}>")
