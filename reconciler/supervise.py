"""Background work that never dies silently: one loop's health, retries with backoff, threads.

Every background loop of the daemon (git source, desired-state files, reconcile worker) and
every background thread (boot gate) goes through here. An exception that escapes one round is
recorded (``LoopHealth``: shown in ``GET /status`` under ``loops``), logged at most once per
``LOG_EVERY`` seconds with a count of the repeats, and the loop runs again after an
exponential backoff. Nothing short of cancellation (shutdown) ends a supervised loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.logs import get_logger, rate_limited

log = get_logger("supervise")


@dataclass
class LoopHealth:
    """What a background loop or thread last reported; ``errors`` counts consecutive failures."""

    name: str
    state: str = "starting"  # starting | running | retrying | stopped | failed (threads)
    errors: int = 0
    last_error: str | None = None
    last_error_time: float | None = None
    backoff_start: float = 1.0
    backoff_max: float = 60.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def failed(self, error: BaseException) -> float:
        """Record one failure; returns the delay before the next attempt."""
        with self._lock:
            self.errors += 1
            self.last_error = f"{type(error).__name__}: {error}"
            self.last_error_time = time.time()
            self.state = "retrying"
            delay = min(self.backoff_max, self.backoff_start * 2 ** min(self.errors - 1, 30))
        rate_limited(log, f"loop:{self.name}", "background loop failed; retrying",
                     loop=self.name, error=self.last_error, retry_in=delay, exc_info=error)
        return delay

    def ok(self) -> None:
        with self._lock:
            self.errors = 0
            self.state = "running"

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.state,
                "errors": self.errors,
                "last_error": self.last_error,
                "last_error_time": self.last_error_time,
            }


class Loops:
    """The health of every supervised loop and thread of one daemon (``GET /status``)."""

    def __init__(self) -> None:
        self._items: dict[str, LoopHealth] = {}

    def health(self, name: str, **backoff: float) -> LoopHealth:
        found = self._items.get(name)
        if found is None:
            found = self._items[name] = LoopHealth(name, **backoff)
        return found

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {name: h.as_dict() for name, h in sorted(self._items.items())}


class Wakeup:
    """How a loop sleeps until it has work: ``poke`` (from the event loop) wakes it at once, a
    poke while it works is not lost, and ``stop`` ends it at its next wake-up."""

    def __init__(self) -> None:
        self._event = asyncio.Event()  # bound to the running loop at its first wait
        self.stopping = False

    def poke(self) -> None:
        self._event.set()

    def stop(self) -> None:
        self.stopping = True
        self._event.set()

    async def wait(self, timeout: float | None) -> None:
        """Until poked or ``timeout`` seconds (None: until poked)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


async def supervised(health: LoopHealth, body: Callable[[], Awaitable[None]]) -> None:
    """Run ``body`` until it returns; any exception is reported and ``body`` runs again later.

    ``body`` is a loop's ``run``: it returns when the loop is asked to stop. Cancellation
    (shutdown) passes through."""
    while True:
        health.state = "running"
        try:
            await body()
        except asyncio.CancelledError:
            health.state = "stopped"
            raise
        except Exception as error:  # noqa: BLE001 - the point: no loop dies of a bug or a full disk
            await asyncio.sleep(health.failed(error))
            continue
        health.state = "stopped"
        return


async def guarded(health: LoopHealth, step: Callable[[], Awaitable[Any]]) -> tuple[Any, float]:
    """One round of a loop: ``(result, 0.0)``, or ``(None, backoff)`` after a reported failure.

    For loops that must answer their waiters whatever happens in the round (``git sync``)."""
    try:
        result = await step()
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001
        return None, health.failed(error)
    health.ok()
    return result, 0.0


def supervised_thread(
    health: LoopHealth,
    target: Callable[[], Any],
    on_error: Callable[[BaseException], None] | None = None,
) -> threading.Thread:
    """A started daemon thread running ``target`` once; an exception is recorded in ``health``
    (state ``failed``) and handed to ``on_error``, never lost with the thread."""

    def run() -> None:
        health.state = "running"
        try:
            target()
        except Exception as error:  # noqa: BLE001
            health.failed(error)
            health.state = "failed"
            if on_error is not None:
                on_error(error)
            return
        health.state = "stopped"

    thread = threading.Thread(target=run, name=health.name, daemon=True)
    thread.start()
    return thread
