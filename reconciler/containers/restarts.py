"""The restart policy's memory and timers: what we remember of each host container (``Record``)
and the wake-ups that bring back a container once its backoff has passed.

The decision itself (restart now, wait, or crash-looping past its budget) is the pure planner's
(``planner.RestartBudget``); this module keeps what that decision needs between passes and
reports a crash loop once, with the container's log tail.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Record:
    """What we know of one host container (in memory; the labels carry the durable part)."""

    name: str
    state: str = "pending"  # pending running exited restarting failed invalid
    source: str = ""
    superpowered: bool = False
    identity: str = ""
    image: str = ""
    digest: str = ""
    generation: int = 0
    restarts: int = 0
    exit_code: int | None = None
    last_error: str = ""
    log_tail: str = ""
    seen_running: bool = False
    recent: list[float] = field(default_factory=list)  # monotonic times of recent restarts
    crash_looping: bool = False

    def view(self) -> dict[str, Any]:
        answer = asdict(self)
        for private in ("recent", "seen_running", "identity"):
            answer.pop(private)
        return answer

    def renew(self, identity: str, source: str, superpowered: bool) -> None:
        """New settings: a fresh crash-loop budget and no stale error."""
        self.identity = identity
        self.source = source
        self.superpowered = superpowered
        self.recent = []
        self.crash_looping = False
        self.last_error = ""
        self.log_tail = ""
        self.exit_code = None
        self.seen_running = False


class RestartTimers:
    """One pending "restart due" wake-up per container."""

    def __init__(self, lock: threading.Lock):
        self._lock = lock  # the executor's
        self._timers: dict[str, threading.Timer] = {}

    def wake_later(self, name: str, delay: float, wake: Callable[[str], None]) -> None:
        timer = threading.Timer(max(delay, 0.0), lambda: wake(f"container {name} restart due"))
        timer.daemon = True
        with self._lock:
            old = self._timers.pop(name, None)
            self._timers[name] = timer
        if old is not None:
            old.cancel()
        timer.start()

    def drop(self, name: str) -> None:
        """Cancel ``name``'s wake-up (call with the executor's lock held)."""
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self) -> None:
        with self._lock:
            timers, self._timers = list(self._timers.values()), {}
        for timer in timers:
            timer.cancel()


def crash_loop_detail(reason: str, log_tail: str) -> str:
    """The step's detail for a crash-looping container: the reason and the last log lines."""
    tail = log_tail.strip().splitlines()[-5:]
    return reason + ("; log tail: " + " | ".join(tail) if tail else "")
