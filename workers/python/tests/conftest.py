"""Shared fixtures: the repository's test configuration, a database per test run (created
from the migrations on first use, dropped at the end), and a worker with embedded
orchestration serving the Python example and fixture namespaces."""

import os
import sys
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
ROOT = os.path.abspath(os.path.join(PYTHON_DIR, "../.."))
EXAMPLES = os.path.join(PYTHON_DIR, "examples")
FIXTURE_TEMPLATES = os.path.join(HERE, "fixtures", "templates")
for path in (EXAMPLES, HERE):
    if path not in sys.path:
        sys.path.insert(0, path)

os.environ.setdefault("TASKER_LOG", "error")

import tasker_core  # noqa: E402
from tasker_core import _native  # noqa: E402

SERVED = ["python_ecommerce", "python_tests"]


def configure(url):
    tasker_core.reset_configuration()
    tasker_core.configure(
        database_url=url, environment="test", config_dir=os.path.join(ROOT, "config/tasker"),
        template_path=[os.path.join(EXAMPLES, "templates"), FIXTURE_TEMPLATES],
    )


@pytest.fixture(scope="session")
def database_url():
    server = os.environ.get("TASKER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    base, _, query = server.partition("?")
    url = base.rsplit("/", 1)[0] + f"/tasker_pytest_{uuid.uuid4().hex[:12]}" + (f"?{query}" if query else "")
    _native.migrate(url)
    yield url
    _native.drop_database(url)


@pytest.fixture(scope="session")
def worker(database_url):
    configure(database_url)
    running = tasker_core.Worker.start(namespaces=SERVED, concurrency=10, orchestration="embedded",
                                       trap_signals=False)
    yield running
    tasker_core.Worker.stop()


@pytest.fixture
def loopback():
    channels = []

    def make(**config):
        channel = _native.LoopbackChannel(config or None)
        channels.append(channel)
        return channel

    yield make
    for c in channels:
        c.close()
