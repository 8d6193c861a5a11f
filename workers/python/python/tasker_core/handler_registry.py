"""Finds the handler for a step's `handler.callable`: one registered explicitly, else the
import path `package.module.Class`."""

import importlib
import inspect
import threading


class Entry:
    """A handler: a StepHandler subclass (one instance per step, given the template's
    handler.initialization), or any callable taking the StepContext."""

    __slots__ = ("callable", "handler", "is_class", "is_async")

    def __init__(self, callable_name, handler):
        self.callable = callable_name
        self.handler = handler
        self.is_class = inspect.isclass(handler)
        target = handler.call if self.is_class else getattr(handler, "call", handler)
        self.is_async = inspect.iscoroutinefunction(target)

    def build(self, initialization):
        if not self.is_class:
            return getattr(self.handler, "call", self.handler)
        return self.handler(initialization).call


class HandlerRegistry:
    def __init__(self):
        self._lock = threading.Lock()
        self._explicit = {}
        self._resolved = {}

    def register(self, callable_name, handler):
        """Serves steps whose handler.callable is `callable_name` with `handler` (a class
        with `call(self, ctx)`, or a function of ctx)."""
        if not (inspect.isclass(handler) and hasattr(handler, "call")) and not callable(handler):
            raise TypeError(f"handler for '{callable_name}' must be a class with call(self, ctx) or a callable")
        entry = Entry(str(callable_name), handler)
        with self._lock:
            self._explicit[entry.callable] = entry
            self._resolved[entry.callable] = entry
        return handler

    def resolve(self, callable_name):
        """The Entry for `callable_name`, or None when it is neither registered nor an
        importable `module.Class` path."""
        found = self._resolved.get(callable_name)
        if found is not None:
            return found
        handler = _import(callable_name)
        if handler is None:
            return None
        entry = Entry(callable_name, handler)
        with self._lock:
            return self._resolved.setdefault(callable_name, entry)

    def clear(self):
        with self._lock:
            self._explicit.clear()
            self._resolved.clear()


def _import(path):
    """`a.b.C` -> attribute C of module a.b (nested attributes allowed: `a.b.Outer.Inner`).
    None when it does not name one; an import that raises propagates, so a broken handler
    module shows its own error."""
    if not path or "::" in path or not all(p.isidentifier() for p in path.split(".")):
        return None
    parts = path.split(".")
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # Only "this module does not exist" means try a shorter module path; a missing
            # import inside an existing module is that module's error.
            if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
                continue
            raise
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return None
        return obj
    return None


_registry = HandlerRegistry()


def handlers():
    return _registry


def register_handler(callable_name, handler=None):
    """`register_handler("Examples::Noop", Noop)`, or as a class decorator:
    `@register_handler("Examples::Noop")`."""
    if handler is None:
        return lambda h: _registry.register(callable_name, h)
    return _registry.register(callable_name, handler)
