"""A task as read from the database (Client.get_task / Client.wait)."""


class Step:
    """One workflow step of a task."""

    def __init__(self, row):
        self.name = row.get("name")
        self.status = row.get("state")
        self.attempts = row.get("attempts")
        self.max_attempts = row.get("max_attempts")
        self.result = row.get("results")
        self.error = row.get("last_error")
        self.step_uuid = row.get("step_uuid")
        self.retryable = row.get("retryable")
        self.completed_at = row.get("completed_at")
        self.step_type = row.get("step_type")
        self.inputs = row.get("inputs")

    @property
    def batch(self):
        """A batch worker copy's batch."""
        return (self.inputs or {}).get("batch")

    @property
    def complete(self):
        return self.status == "complete"

    def __repr__(self):
        return f"{self.name}={self.status}({self.attempts})"


class Task:
    def __init__(self, row, created=None):
        self.task_uuid = row.get("task_uuid")
        self.status = row.get("state")
        self.namespace = row.get("namespace")
        self.name = row.get("name")
        self.version = row.get("version")
        self.context = row.get("context")
        self.idempotency_key = row.get("idempotency_key")
        self.created_at = row.get("created_at")
        self.completed_at = row.get("completed_at")
        self.run_at = row.get("run_at")
        self.terminal = bool(row.get("terminal"))
        self.steps = [Step(s) for s in row.get("steps") or []]
        # False when create_task found an existing task for the idempotency key.
        self.created = created

    def step(self, name):
        """The step named `name`; KeyError listing the task's steps when there is none."""
        for s in self.steps:
            if s.name == str(name):
                return s
        raise KeyError(f"task {self.task_uuid} ({self.namespace}/{self.name}) has no step '{name}'; "
                       f"steps: {', '.join(s.name for s in self.steps)}")

    @property
    def complete(self):
        return self.status == "complete"

    def __repr__(self):
        steps = " ".join(repr(s) for s in self.steps)
        return f"<tasker_core.Task {self.task_uuid} {self.namespace}/{self.name}@{self.version} {self.status} {steps}>"
