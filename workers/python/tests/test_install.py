"""Packaging (slow; `pytest -m slow`, run by bin/test): `pip install ./workers/python` into a
fresh virtual environment, and the wheel `maturin build --release` makes into another one
with no cargo on PATH; each imports tasker_core and runs the order-fulfillment example.
Both builds reuse target/release, so only the extension's own crates compile when warm."""

import os
import shutil
import subprocess
import sys
import uuid

import pytest

from tasker_core import _native
from conftest import EXAMPLES, PYTHON_DIR, ROOT

pytestmark = pytest.mark.slow

EXAMPLE = os.path.join(EXAMPLES, "run_example.py")


@pytest.fixture(scope="module")
def example_database():
    url = f"postgresql://postgres@127.0.0.1:5432/tasker_pytest_install_{uuid.uuid4().hex[:10]}"
    _native.migrate(url)
    yield url
    _native.drop_database(url)


def venv(path):
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    return os.path.join(path, "bin", "python")


def run_example(python, database_url, env_path):
    env = dict(os.environ, DATABASE_URL=database_url, TASKER_ENV="test", PATH=env_path,
               TASKER_CONFIG_DIR=os.path.join(ROOT, "config/tasker"), TASKER_LOG="error")
    env.pop("PYTHONPATH", None)
    # From outside the repository, so the installed package is the one imported.
    out = subprocess.run([python, EXAMPLE], env=env, cwd="/", capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "complete" in out.stdout
    return out.stdout


def test_pip_install_from_source_into_a_fresh_venv(tmp_path, example_database):
    python = venv(str(tmp_path / "venv"))
    subprocess.run([python, "-m", "pip", "install", "-q", PYTHON_DIR], check=True, timeout=3600)
    installed = subprocess.run([python, "-c", "import tasker_core, os; print(tasker_core.__file__)"],
                               capture_output=True, text=True, cwd="/", check=True).stdout
    assert str(tmp_path) in installed
    run_example(python, example_database, os.environ["PATH"])


def test_built_wheel_installs_and_runs_without_cargo(tmp_path, example_database):
    maturin = shutil.which("maturin") or os.path.join(os.path.dirname(sys.executable), "maturin")
    wheels = tmp_path / "wheels"
    subprocess.run([maturin, "build", "--release", "-q", "-o", str(wheels)], cwd=PYTHON_DIR, check=True,
                   timeout=3600)
    (wheel,) = list(wheels.glob("tasker_core-*.whl"))
    python = venv(str(tmp_path / "venv"))
    # No cargo, no rustc: only the venv and the system's basic tools.
    bare_path = os.pathsep.join([os.path.dirname(python), "/usr/bin", "/bin"])
    assert shutil.which("cargo", path=bare_path) is None
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", str(wheel)], check=True,
                   env=dict(os.environ, PATH=bare_path))
    run_example(python, example_database, bare_path)
