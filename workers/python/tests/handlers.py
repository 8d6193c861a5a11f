"""Handlers the tests use (the fixture templates name them by import path)."""

import asyncio
import datetime
import threading
import time

from tasker_core import PermanentError, RetryableError, StepHandler, batches

SEEN = {}
FLAKY_CALLS = {}
_lock = threading.Lock()


class Echo(StepHandler):
    """Returns everything the context offers, so tests can check each accessor."""

    def call(self, ctx):
        return self.success({
            "task_context": ctx.task_context, "initialization": ctx.initialization,
            "step_name": ctx.step_name, "attempt": ctx.attempt, "max_attempts": ctx.max_attempts,
            "task_uuid": ctx.task_uuid, "step_uuid": ctx.step_uuid, "namespace": ctx.namespace,
            "task_name": ctx.task_name, "task_version": ctx.task_version,
            "handler_callable": ctx.handler_callable, "self_initialization": self.initialization,
        }, metadata={"handler": "echo"})


class Add(StepHandler):
    def call(self, ctx):
        return ctx.task_context["value"] + ctx.initialization.get("add", 0)


class Double(StepHandler):
    async def call(self, ctx):
        await asyncio.sleep(0)
        return ctx.dependency_result("add") * 2


class Sleep(StepHandler):
    def call(self, ctx):
        # A test that must know the step reached a handler (not just a claim) names a file.
        started = ctx.task_context.get("started_file")
        if started:
            with open(started, "w", encoding="utf-8"):
                pass
        time.sleep(ctx.initialization.get("ms", 100) / 1000.0)
        return {"slept": True}


class AsyncSleep(StepHandler):
    async def call(self, ctx):
        await asyncio.sleep(ctx.initialization.get("ms", 100) / 1000.0)
        return {"slept": True}


class Forever(StepHandler):
    """Never returns (until the test lets it go)."""

    release = threading.Event()

    def call(self, ctx):
        self.release.wait(30)
        return {"late": True}


class AsyncForever(StepHandler):
    async def call(self, ctx):
        await asyncio.sleep(3600)


class Retryable(StepHandler):
    def call(self, ctx):
        raise RetryableError("gateway busy", retry_after=5)


class Permanent(StepHandler):
    def call(self, ctx):
        raise PermanentError("card declined", error_type="payment_declined")


class Boom(StepHandler):
    def call(self, ctx):
        return helper_that_raises()


def helper_that_raises():
    raise ValueError("boom in helper")


class Fails(StepHandler):
    def call(self, ctx):
        return self.failure("bad input", error_type="validation", retryable=False)


class Flaky(StepHandler):
    """Fails retryably until its third attempt."""

    def call(self, ctx):
        if ctx.attempt < 3:
            raise RetryableError(f"attempt {ctx.attempt} fails")
        return {"attempts": ctx.attempt}


class BadResult(StepHandler):
    def call(self, ctx):
        kind = ctx.initialization["kind"]
        if kind == "nan":
            return {"ratio": float("nan")}
        if kind == "infinity":
            return [1, float("inf")]
        if kind == "cycle":
            d = {"a": 1}
            d["self"] = d
            return d
        if kind == "object":
            return {"when": datetime.datetime(2026, 1, 1)}
        if kind == "key":
            return {1: "int key"}
        if kind == "bigint":
            return {"n": 2 ** 70}
        if kind == "deep":
            v = []
            for _ in range(200):
                v = [v]
            return v
        if kind == "metadata":
            return self.success({"ok": True}, metadata=["not", "a", "dict"])
        if kind == "retry_after":
            raise RetryableError("later", retry_after="soon")
        raise AssertionError(kind)


class Route(StepHandler):
    def call(self, ctx):
        amount = ctx.task_context["amount"]
        return self.success({"amount": amount}, next_steps=["auto_approve"] if amount < 100 else ["manager_approval"])


class Approve(StepHandler):
    def call(self, ctx):
        return {"approved_by": ctx.step_name}


class Finalize(StepHandler):
    def call(self, ctx):
        return {"auto": ctx.dependency_result("auto_approve"), "manager": ctx.dependency_result("manager_approval")}


class Plan(StepHandler):
    def call(self, ctx):
        return self.success({"total": ctx.task_context["rows"]},
                            batches=batches.ranges(total=ctx.task_context["rows"], size=ctx.task_context["size"]))


class ProcessBatch(StepHandler):
    def call(self, ctx):
        b = ctx.batch
        return {"batch_id": b["batch_id"], "rows": b["end_cursor"] - b["start_cursor"]}


class Aggregate(StepHandler):
    def call(self, ctx):
        results = ctx.batch_results("process_batch")
        return {"batches": [r["batch_id"] for r in results], "rows": sum(r["rows"] for r in results)}
