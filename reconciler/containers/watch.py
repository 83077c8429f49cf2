"""The engine's event stream, turned into worker wake-ups.

A container that dies, is killed or removed by hand wakes the worker once (after a short settle,
so "died" then "remove" is one wake-up), unless the executor itself is acting on it. The watch
thread survives any error of the stream (it reconnects with backoff; the periodic pass covers
the gap).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from reconciler.containers.engine import ContainerEngine
from reconciler.logs import get_logger

log = get_logger("containers")

WAKE_EVENTS = {"died", "remove", "oom", "kill"}
EVENT_SETTLE = 0.3  # seconds to let a burst of engine events settle before one wake-up


class EventWatch:
    """One ``podman-events`` thread, started on demand, stopped by ``close``."""

    def __init__(self, engine: ContainerEngine, clock: Callable[[], float],
                 lock: threading.Lock):
        self.engine = engine
        self.clock = clock
        self.wake: Callable[[str], None] | None = None
        self.stop = threading.Event()
        self._lock = lock  # the executor's: ``acting`` and the timer are read under it
        self._acting: set[str] = set()
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    @contextlib.contextmanager
    def acting(self, name: str) -> Iterator[None]:
        """Events of ``name`` meanwhile are our own doing (remove, recreate): no wake-up."""
        with self._lock:
            self._acting.add(name)
        try:
            yield
        finally:
            with self._lock:
                self._acting.discard(name)

    def ensure(self) -> None:
        if self.wake is None or self.stop.is_set():
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._loop, name="podman-events", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and a pending wake-up (the caller has set ``stop``)."""
        with self._lock:
            timer = self._timer
        if timer is not None:
            timer.cancel()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        delay = 1.0
        while not self.stop.is_set():
            started = self.clock()
            try:
                for event in self.engine.events(self.stop):
                    self.on_event(event)
            except Exception as error:  # keep watching; the periodic pass covers the gap
                log.warning("container event watch failed", error=str(error))
            if self.stop.is_set():
                return
            delay = 1.0 if self.clock() - started > 30 else min(delay * 2, 30.0)
            self.stop.wait(delay)

    def on_event(self, event: Mapping[str, Any]) -> None:
        status = str(event.get("Status", ""))
        name = str(event.get("Name", ""))
        if status not in WAKE_EVENTS or self.wake is None:
            return
        with self._lock:
            if name in self._acting:
                return  # our own doing (remove, recreate)
            if self._timer is not None and self._timer.is_alive():
                return  # a wake-up is already on its way
            # "died" is followed by "remove" when a container is removed by hand: wake once,
            # after both, rather than starting a container that is being removed.
            wake = self.wake
            self._timer = threading.Timer(EVENT_SETTLE, lambda: wake(f"container {name} {status}"))
            self._timer.daemon = True
            self._timer.start()
