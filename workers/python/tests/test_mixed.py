"""One run, three languages: a Rust worker (`tasker worker`), a Ruby worker (`rake
tasker:worker`) and this process's Python worker each serve one namespace; tasks in all
three complete side by side through the same orchestration and database."""

import os
import shutil
import subprocess
import time

import pytest

from tasker_core import Client, TemplateNotFoundError
from conftest import ROOT

TASKER = os.path.join(ROOT, "target", "debug", "tasker")
RUBY_EXT = os.path.join(ROOT, "workers", "ruby", "lib", "tasker_core", "tasker_core.so")


def env_for(database_url):
    return dict(os.environ, DATABASE_URL=database_url, TASKER_ENV="test",
                TASKER_CONFIG_DIR=os.path.join(ROOT, "config/tasker"),
                TASKER_TEMPLATE_PATH=os.path.join(ROOT, "config/tasks"),
                TASKER_WORKER__BIND_ADDRESS="", TASKER_LOG="error")


@pytest.fixture
def other_workers(worker, database_url):
    # bin/test builds both before the pytest suite runs.
    if not os.path.exists(TASKER) or not os.path.exists(RUBY_EXT) or not shutil.which("rake"):
        pytest.skip("needs target/debug/tasker (cargo build -p tasker-cli) and the Ruby extension (rake compile)")
    env = env_for(database_url)
    rust = subprocess.Popen([TASKER, "worker", "--namespace", "linear_workflow"], env=env,
                            stdin=subprocess.DEVNULL)
    ruby = subprocess.Popen(
        ["rake", "-f", os.path.join(ROOT, "Rakefile"), "tasker:worker"],
        env=dict(env, NAMESPACES="diamond_workflow", CONCURRENCY="4",
                 HANDLERS=os.path.join(ROOT, "workers/ruby/examples/handlers.rb")),
        stdin=subprocess.DEVNULL)
    yield
    for p in (rust, ruby):
        p.terminate()
    for p in (rust, ruby):
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


def create_when_registered(namespace, name, context, timeout=90):
    """Each worker registers its templates as it starts: retry until it has."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return Client.create_task(namespace=namespace, name=name, version="1.0.0", context=context)
        except TemplateNotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_rust_ruby_and_python_workers_serve_one_run(other_workers):
    started = time.monotonic()
    rust = create_when_registered("linear_workflow", "linear_math", {"value": 6})
    ruby = create_when_registered("diamond_workflow", "diamond_math", {"value": 3})
    python = Client.create_task(namespace="python_ecommerce", name="order_fulfillment", version="1.0.0",
                                context={"order_id": 5, "items": [{"sku": "A", "quantity": 1, "price": 2.5}]})
    rust, ruby, python = (Client.wait(t, timeout=90) for t in (rust, ruby, python))
    assert rust.status == "complete" and rust.step("minus_one").result == 575
    assert ruby.status == "complete" and ruby.step("join").result == 37
    assert python.status == "complete" and python.step("validate_order").result["total"] == 2.5
    print(f"\nmixed run: 3 tasks in 3 languages complete in {time.monotonic() - started:.1f} s")
