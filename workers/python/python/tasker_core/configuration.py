"""Process-wide settings: the database, the environment, template directories and single
configuration keys, each falling back to the environment variables every user meets
(DATABASE_URL, TASKER_ENV, TASKER_TEMPLATE_PATH, TASKER_CONFIG_DIR)."""

import os
import threading

from . import _native


def _present(value):
    return value if value else None


class Configuration:
    def __init__(self):
        self.database_url = None
        self.environment = None
        self.config_dir = None
        self.template_path = None
        self._overrides = {}
        self._lock = threading.Lock()

    def resolved_database_url(self):
        return self.database_url or _present(os.environ.get("DATABASE_URL"))

    def resolved_environment(self):
        return self.environment or _present(os.environ.get("TASKER_ENV")) or "development"

    def resolved_config_dir(self):
        return self.config_dir or _present(os.environ.get("TASKER_CONFIG_DIR"))

    def template_paths(self):
        """Template directories: `template_path` (a list or a colon-separated str), else
        TASKER_TEMPLATE_PATH, else ./config/tasks."""
        raw = self.template_path or _present(os.environ.get("TASKER_TEMPLATE_PATH")) or "config/tasks"
        items = raw if isinstance(raw, (list, tuple)) else str(raw).split(":")
        return [str(p) for p in items if str(p)]

    def set(self, key, value):
        """One configuration key, above every other layer, e.g.
        set("worker.mpsc_channels.ffi_dispatch.completion_timeout_ms", 5000)."""
        with self._lock:
            self._overrides[str(key)] = value
        return self

    def overrides(self):
        with self._lock:
            return dict(self._overrides)

    def native_options(self):
        options = {
            "database_url": self.resolved_database_url(),
            "environment": self.resolved_environment(),
            "config_dir": self.resolved_config_dir(),
            "config": self.overrides(),
        }
        return {k: v for k, v in options.items() if v is not None}

    def resolved(self):
        """The merged configuration a worker would run with, as a dict."""
        return _native.load_config(self.native_options())


_configuration = Configuration()


def configuration():
    return _configuration


def configure(database_url=None, environment=None, config_dir=None, template_path=None, config=None):
    """Sets what is given; returns the configuration."""
    c = _configuration
    if database_url is not None:
        c.database_url = database_url
    if environment is not None:
        c.environment = environment
    if config_dir is not None:
        c.config_dir = config_dir
    if template_path is not None:
        c.template_path = template_path
    for key, value in (config or {}).items():
        c.set(key, value)
    return c


def reset_configuration():
    global _configuration
    _configuration = Configuration()
    return _configuration
