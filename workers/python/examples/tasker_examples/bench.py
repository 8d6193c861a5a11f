"""The handlers the benchmark's templates name (Examples::Noop, Examples::Sleep,
Import::Plan), registered under those names: `python -m tasker_core worker --import
tasker_examples.bench`."""

import time

from tasker_core import StepHandler, batches, register_handler


@register_handler("Examples::Noop")
class Noop(StepHandler):
    def call(self, ctx):
        return self.success(None)


@register_handler("Examples::Sleep")
class Sleep(StepHandler):
    """Sleeps initialization["ms"] milliseconds (the context's `sleep_ms` wins); time.sleep
    releases the GIL, so other handler threads run meanwhile."""

    def call(self, ctx):
        ms = ctx.task_context.get("sleep_ms", ctx.initialization.get("ms", 0))
        time.sleep(ms / 1000.0)
        return self.success({"slept_ms": ms})


@register_handler("Import::Plan")
class Plan(StepHandler):
    def call(self, ctx):
        rows = ctx.task_context["rows"]
        size = max(ctx.task_context["batch_size"], 1)
        return self.success({"total": rows}, batches=batches.ranges(total=rows, size=size))
