"""When the git source syncs: on its interval (with jitter), on request, on a pointer change.

An unreachable remote or a bad revision is a condition, retried with exponential backoff up to
the interval; never a crash. Any other error of a round (a full disk, a locked store) is too:
the loop is supervised (``reconciler.supervise``) and a waiter always gets an answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from typing import Any

from reconciler.metrics import Metrics
from reconciler.sources.gitsync import GitSync
from reconciler.supervise import LoopHealth, guarded, supervised

JITTER = 0.1


class GitLoop:
    """Runs ``sync`` when due; ``wake(reason)`` is called when a sync changed settings."""

    def __init__(self, sync: GitSync, wake: Callable[[str], None], metrics: Metrics,
                 health: LoopHealth | None = None):
        self.sync = sync
        self.wake_reconcile = wake
        self.health = health or LoopHealth("git")
        self.metrics = metrics
        self._wake = asyncio.Event()
        self._waiters: list[asyncio.Future[dict[str, Any]]] = []
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Stop after the current round; a fetch in progress is killed, not waited for."""
        self._stopping = True
        self.sync.cancel()
        self._wake.set()

    async def request(self) -> dict[str, Any]:
        """Sync now; the answer is the status after that sync."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._wake.set()
        return await future

    def _delay(self) -> float:
        interval = self.sync.interval()
        failures = self.sync.status.failures
        if failures:
            return min(interval, 2.0 ** min(failures - 1, 16))
        return interval * random.uniform(1 - JITTER, 1 + JITTER)

    async def run(self) -> None:
        """The loop, supervised: an error of one round is reported (``health``, and the sync's
        own status) and retried with backoff; only ``stop()`` ends it."""
        await supervised(self.health, self._run)

    async def _run(self) -> None:
        backoff = 0.0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), backoff or self._delay())
            if self._stopping:
                break
            self._wake.clear()
            waiters, self._waiters = self._waiters, []
            answer, backoff = await guarded(self.health, self._round)
            if answer is None:  # the round itself failed: still answer who asked
                answer = {**self.sync.status.as_dict(), "condition": "Failed",
                          "reason": self.health.last_error, "changed": []}
            for future in waiters:
                if not future.done():
                    future.set_result(answer)
        for future in self._waiters:
            if not future.done():
                future.cancel()

    async def _round(self) -> dict[str, Any]:
        started = time.perf_counter()
        status = await asyncio.to_thread(self.sync.sync)
        if status.condition != "Disabled":
            self.metrics.git_sync_duration.observe(time.perf_counter() - started)
        if status.condition in ("Failed", "Invalid", "Unverified", "Refused"):
            self.metrics.git_sync_failures.labels(status.condition).inc()
        if status.changed:
            self.wake_reconcile("git")
        return status.as_dict()
