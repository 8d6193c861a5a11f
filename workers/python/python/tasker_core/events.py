"""Subscriptions to `fast` domain events (declared in templates with delivery_mode: fast),
and the thread that delivers them while a worker runs."""

import fnmatch
import logging
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable

log = logging.getLogger("tasker_core")


@dataclass(frozen=True)
class Event:
    event_uuid: str
    name: str
    namespace: str
    task_uuid: str
    step_uuid: str
    step_name: str
    success: bool
    payload: Any
    published_at: str


@dataclass(frozen=True)
class Subscription:
    pattern: str
    callback: Callable[[Event], Any]


def _expand(pattern):
    """`{a,b}.*` -> [`a.*`, `b.*`]: the one glob feature fnmatch lacks."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    out = []
    for alt in m.group(1).split(","):
        out.extend(_expand(pattern[: m.start()] + alt + pattern[m.end():]))
    return out


def match(pattern, name):
    """Glob over dotted names: "payment.*", "*.failed", "{order,payment}.*", "*"."""
    return any(fnmatch.fnmatchcase(name, p) for p in _expand(pattern))


class Events:
    def __init__(self):
        self._lock = threading.Lock()
        self._subscriptions = ()

    def subscribe(self, pattern, callback=None):
        """`subscribe("order.*", fn)`, or as a decorator: `@subscribe("order.*")`."""
        if callback is None:
            return lambda fn: (self.subscribe(pattern, fn), fn)[1]
        if not callable(callback):
            raise TypeError("subscribe needs a callable")
        sub = Subscription(str(pattern), callback)
        with self._lock:
            self._subscriptions = self._subscriptions + (sub,)
        return sub

    def unsubscribe(self, subscription):
        with self._lock:
            self._subscriptions = tuple(s for s in self._subscriptions if s is not subscription)

    def clear(self):
        with self._lock:
            self._subscriptions = ()

    def dispatch(self, data):
        """Delivers one event (the dict poll_event returns) to every matching subscriber.
        A subscriber that raises is logged; the others still get the event."""
        fields = {k: data.get(k) for k in Event.__dataclass_fields__}
        event = Event(**fields)
        for s in self._subscriptions:
            if not match(s.pattern, event.name):
                continue
            try:
                s.callback(event)
            except Exception as e:  # noqa: BLE001
                log.error("subscriber for '%s' raised on %s: %s: %s", s.pattern, event.name, type(e).__name__, e)


class Dispatcher:
    """Polls a worker's event stream on one thread until stopped."""

    POLL_TIMEOUT = 0.2

    def __init__(self, source, events):
        self.source = source
        self.events = events
        self._stopping = threading.Event()
        self._thread = None

    def start(self):
        self._thread = threading.Thread(target=self._run, name="tasker-events", daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stopping.is_set():
            try:
                event = self.source.poll_event(self.POLL_TIMEOUT)
            except Exception as e:  # noqa: BLE001  (a forked child, a stopped worker)
                log.debug("event dispatcher stopping: %s", e)
                return
            if event is False:  # the worker stopped and every event was delivered
                return
            if event is not None:
                self.events.dispatch(event)

    def stop(self, timeout=1.0):
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)


_events = Events()


def events():
    return _events


def subscribe(pattern, callback=None):
    return _events.subscribe(pattern, callback)


def unsubscribe(subscription):
    _events.unsubscribe(subscription)
