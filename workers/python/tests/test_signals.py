"""`python -m tasker_core worker`: SIGTERM and Ctrl-C (SIGINT) drain in-flight steps and
stop the process cleanly."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tasker_core import Client
from conftest import EXAMPLES, HERE, ROOT


def spawn_worker(database_url):
    env = dict(os.environ, DATABASE_URL=database_url, TASKER_ENV="test",
               TASKER_CONFIG_DIR=os.path.join(ROOT, "config/tasker"),
               TASKER_TEMPLATE_PATH=os.path.join(HERE, "fixtures", "signal_templates"),
               PYTHONPATH=os.pathsep.join([HERE, EXAMPLES]))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tasker_core", "worker", "--namespace", "python_signals", "--concurrency", "2"],
        env=env, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    assert "serving python_signals" in line, line
    return proc


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_drains_and_stops(worker, database_url, sig, tmp_path):
    proc = spawn_worker(database_url)
    started = tmp_path / "nap_started"
    try:
        task = Client.create_task(namespace="python_signals", name="drained", version="1.0.0",
                                  context={"started_file": str(started)})
        # A handler holds the step, not only a claim: a claimed step no handler has polled
        # yet is handed back at shutdown, by design.
        deadline = time.monotonic() + 20
        while not started.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists()
        assert Client.get_task(task).step("nap").status == "in_progress"
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 0
        # The step it held was finished and recorded, not abandoned.
        task = Client.wait(task, timeout=30)
        assert task.status == "complete"
        assert task.step("nap").attempts == 1
    finally:
        if proc.poll() is None:
            proc.kill()
