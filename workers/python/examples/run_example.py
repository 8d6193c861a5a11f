"""Runs the Python order-fulfillment example in one process: a worker with embedded
orchestration, one task, its results. Needs DATABASE_URL (a migrated database, e.g. from
`tasker migrate`).

    python workers/python/examples/run_example.py
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import tasker_core  # noqa: E402
from tasker_core import Client, Worker  # noqa: E402

ORDER = {"order_id": 42, "items": [{"sku": "A", "quantity": 2, "price": 10.5},
                                   {"sku": "B", "quantity": 1, "price": 4.0}]}


def main():
    tasker_core.configure(template_path=[os.path.join(HERE, "templates")])
    Worker.start(namespaces=["python_ecommerce"], concurrency=4, orchestration="embedded")
    try:
        task = Client.create_task(namespace="python_ecommerce", name="order_fulfillment", version="1.0.0",
                                  context=ORDER)
        task = Client.wait(task, timeout=60)
        print(f"task {task.task_uuid}: {task.status}")
        for step in task.steps:
            print(f"  {step.name}: {step.status} {step.result}")
        return 0 if task.status == "complete" else 1
    finally:
        Worker.stop()


if __name__ == "__main__":
    sys.exit(main())
