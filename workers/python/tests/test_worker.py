"""A Python worker against the real database: workflows end to end, outcomes recorded by
the engine, the Client, domain events, and what a Python user expects of fork."""

import os
import time

import pytest

import tasker_core
from tasker_core import Client, Worker
from tasker_core.configuration import Configuration
from conftest import FIXTURE_TEMPLATES, HERE

ORDER = {"order_id": 42, "items": [{"sku": "A", "quantity": 2, "price": 10.5},
                                   {"sku": "B", "quantity": 1, "price": 4.0}]}


def run(namespace, name, context, timeout=30, **kw):
    task = Client.create_task(namespace=namespace, name=name, version="1.0.0", context=context, **kw)
    return Client.wait(task, timeout=timeout)


def test_order_fulfillment_example(worker):
    task = run("python_ecommerce", "order_fulfillment", ORDER)
    assert task.status == "complete", task
    assert task.step("validate_order").result == {"order_id": 42, "item_count": 3, "total": 25.0}
    assert task.step("charge_payment").result == {"charge_id": "ch_42", "amount": 25.0, "currency": "USD"}
    assert task.step("ship_order").result["tracking_number"] == "TRK00000042"
    assert task.step("ship_order").attempts == 1


def test_sync_then_async_handlers_pass_results_down(worker):
    task = run("python_tests", "chain", {"value": 1})
    assert task.status == "complete"
    assert task.step("add").result == 3
    assert task.step("double").result == 6


def test_decision_creates_only_the_chosen_branch(worker):
    task = run("python_tests", "approval", {"amount": 50})
    assert task.status == "complete", task
    names = {s.name for s in task.steps}
    assert "auto_approve" in names and "manager_approval" not in names
    assert task.step("finalize").result == {"auto": {"approved_by": "auto_approve"}, "manager": None}


def test_batches_fan_out_and_converge(worker):
    task = run("python_tests", "import", {"rows": 25, "size": 10})
    assert task.status == "complete", task
    copies = sorted(s.name for s in task.steps if s.name.startswith("process_batch_"))
    assert copies == ["process_batch_000", "process_batch_001", "process_batch_002"]
    assert task.step("process_batch_002").batch == {"batch_id": "002", "start_cursor": 20, "end_cursor": 25}
    assert task.step("aggregate").result == {"batches": ["000", "001", "002"], "rows": 25}


def test_retryable_errors_are_retried(worker):
    task = run("python_tests", "flaky", {})
    assert task.status == "complete"
    assert task.step("flaky").attempts == 3
    assert task.step("flaky").result == {"attempts": 3}


def test_permanent_error_blocks_the_task(worker):
    task = run("python_tests", "errors", {})
    assert task.status == "error"
    step = task.step("permanent")
    assert step.status == "error" and step.attempts == 1
    assert step.error["error_type"] == "payment_declined"
    assert step.error["retryable"] is False


def test_bad_result_is_invalid_result_and_the_worker_keeps_serving(worker):
    task = run("python_tests", "bad_result", {})
    assert task.status == "error"
    step = task.step("bad")
    assert step.attempts == 1
    assert step.error["error_type"] == "invalid_result"
    assert "NaN" in step.error["message"]
    assert run("python_tests", "chain", {"value": 2}).status == "complete"


def test_client_idempotency_get_cancel_and_timeout(worker):
    first = Client.create_task(namespace="python_tests", name="slow", version="1.0.0", context={},
                               idempotency_key="py-slow-1")
    again = Client.create_task(namespace="python_tests", name="slow", version="1.0.0", context={},
                               idempotency_key="py-slow-1")
    assert first.created is True and again.created is False
    assert again.task_uuid == first.task_uuid
    with pytest.raises(tasker_core.TimeoutError, match="still"):
        Client.wait(first, timeout=0.2)
    assert Client.get_task(first.task_uuid).task_uuid == first.task_uuid
    cancelled = Client.cancel(first)
    assert cancelled.status == "cancelled"
    with pytest.raises(tasker_core.NotFoundError):
        Client.get_task("00000000-0000-0000-0000-000000000000")
    with pytest.raises(tasker_core.TemplateNotFoundError):
        Client.create_task(namespace="python_tests", name="nope", version="1.0.0", context={})
    with pytest.raises(ValueError, match="context"):
        Client.create_task(namespace="python_tests", name="chain", version="1.0.0", context=[1])


def test_wait_is_woken_by_the_database(worker):
    task = Client.create_task(namespace="python_tests", name="chain", version="1.0.0", context={"value": 3})
    started = time.monotonic()
    task = Client.wait(task, timeout=30)
    assert task.status == "complete"
    # Woken by the task-finished notification, well before the fallback poll would.
    assert time.monotonic() - started < 5


def test_domain_events_reach_subscribers(worker):
    got = []
    sub = tasker_core.subscribe("order.*", got.append)
    try:
        task = run("python_ecommerce", "order_fulfillment", {**ORDER, "order_id": 7})
        assert task.status == "complete"
        deadline = time.monotonic() + 5
        while not any(e.task_uuid == task.task_uuid for e in got) and time.monotonic() < deadline:
            time.sleep(0.02)
        event = next(e for e in got if e.task_uuid == task.task_uuid)
        assert event.name == "order.validated" and event.step_name == "validate_order" and event.success
    finally:
        tasker_core.unsubscribe(sub)


def test_status_and_metrics(worker):
    status = worker.status()
    assert status["running"] is True
    assert status["handler_threads_alive"] == 10
    metrics = worker.ffi_metrics()
    assert {"pending", "in_process", "starving", "timeouts", "completed"} <= set(metrics)
    with pytest.raises(tasker_core.WorkerError, match="already running"):
        Worker.start(namespaces=["python_tests"], trap_signals=False)


def test_missing_handlers_are_named_before_anything_starts(database_url):
    config = Configuration()
    config.database_url = database_url
    config.environment = "test"
    config.template_path = [os.path.join(HERE, "fixtures", "missing_templates")]
    w = Worker(namespaces=["python_missing"], config=config, trap_signals=False)
    with pytest.raises(tasker_core.HandlerNotFoundError, match="nowhere.to.be.Found"):
        w._start()


def test_a_forked_child_gets_fork_error_not_a_hang(worker):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                worker.status()
            except tasker_core.ForkError as e:
                code = 0 if "forked process" in str(e) else 2
            try:
                Worker.stop()
                code = 3
            except tasker_core.ForkError:
                pass
        finally:
            os._exit(code)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the forked child hung")
    # The parent's worker is untouched.
    assert run("python_tests", "chain", {"value": 1}).status == "complete"
