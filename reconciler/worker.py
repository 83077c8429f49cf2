"""The single reconcile worker: woken by commits, file-watch events and a timer.

Wake-ups only say "look again"; they carry no work, so bursts coalesce into one pass. A failed
pass is retried with exponential backoff. Callers may wait for the pass that covers a generation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from reconciler.events import Events
from reconciler.host import Host
from reconciler.logs import get_logger
from reconciler.metrics import Metrics
from reconciler.supervise import LoopHealth, supervised

log = get_logger("worker")


async def _within(future: asyncio.Future[dict[str, Any]], timeout: float) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        return await future


class Worker:
    def __init__(
        self,
        host: Host,
        events: Events,
        metrics: Metrics,
        interval: float = 60.0,
        backoff_start: float = 1.0,
        backoff_max: float = 60.0,
    ):
        self.host = host
        self.events = events
        self.metrics = metrics
        self.interval = interval
        self.backoff_start = backoff_start
        self.backoff_max = backoff_max
        self.busy = False
        self.failures = 0
        self.last_receipt: dict[str, Any] | None = host.store.last_receipt()
        self.applied = host.store.applied_generation()  # the newest generation a pass applied
        self._wake = asyncio.Event()
        self._reasons: set[str] = set()
        self._waiters: list[tuple[int, asyncio.Future[dict[str, Any]]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self.after_pass: list[Callable[[dict[str, Any]], None]] = []
        self.health = LoopHealth("worker")

    def wake(self, reason: str) -> None:
        """Ask for a pass (event-loop thread only; use ``wake_threadsafe`` elsewhere)."""
        self._reasons.add(reason)
        self._wake.set()

    def wake_threadsafe(self, reason: str) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self.wake, reason)

    def wait_for(self, generation: int,
                 timeout: float = 300.0) -> Coroutine[Any, Any, dict[str, Any]]:
        """The receipt of the first pass that starts after this call and covers ``generation``.

        The waiter is registered by the call itself (a wake-up right after it is covered), and
        the caller awaits the future directly: the pass's answer reaches it in one turn of the
        event loop, where a task around ``asyncio.wait_for`` took three."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters.append((generation, future))
        return _within(future, timeout)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _next_delay(self) -> float:
        if self.failures:
            return min(self.backoff_max, self.backoff_start * 2 ** (self.failures - 1))
        return self.interval

    async def run(self) -> None:
        """Supervised (``reconciler.supervise``): whatever escapes a round is reported and the
        loop goes on after a backoff."""
        self._loop = asyncio.get_running_loop()
        await supervised(self.health, self._run)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await asyncio.wait_for(self._wake.wait(), self._next_delay())
            except TimeoutError:
                self._reasons.add("retry" if self.failures else "timer")
            if self._stopping:
                break
            self._wake.clear()
            reason = ", ".join(sorted(self._reasons)) or "timer"
            self._reasons.clear()
            waiters, self._waiters = self._waiters, []
            try:
                receipt = await self._pass(reason)
            except BaseException:
                self._waiters = waiters + self._waiters  # answered by the retried pass
                raise
            for generation, future in waiters:
                if future.done():
                    continue
                if receipt["generation"] >= generation:
                    future.set_result(receipt)
                else:
                    self._waiters.append((generation, future))
            # The events and metrics of the pass's steps after its waiters' answers have gone
            # out (one turn of the loop): an API client reads them with its next request,
            # which the loop reads only after this.
            await asyncio.sleep(0)
            self._report(receipt)
        for _, future in self._waiters:
            if not future.done():
                future.cancel()

    async def _pass(self, reason: str) -> dict[str, Any]:
        self.busy = True
        started = time.perf_counter()
        store = self.host.store
        # The log context's generation is the newest this process saw: no store round trip.
        structlog.contextvars.bind_contextvars(generation=store.last_generation, tx=None)
        try:
            receipt = await asyncio.to_thread(self.host.reconciler.run_pass, reason)
        except Exception as error:  # a bug or a broken store: report it, keep the daemon up
            log.exception("reconcile pass crashed")
            receipt = {
                "generation": store.generation(),
                "ok": False,
                "reason": reason,
                "error": f"{type(error).__name__}: {error}",
                "steps": [],
            }
        finally:
            self.busy = False
        self.metrics.pass_duration.observe(time.perf_counter() - started)
        self.metrics.passes.labels("ok" if receipt["ok"] else "failed").inc()
        if receipt["ok"]:
            self.applied = max(self.applied, receipt["generation"])
        self.metrics.live_generation.set(store.last_generation)
        self.metrics.applied_generation.set(self.applied)
        self.failures = 0 if receipt["ok"] else self.failures + 1
        for hook in self.after_pass:  # one failing hook neither kills the worker nor the rest
            try:
                hook(receipt)
            except Exception as error:  # noqa: BLE001
                self.health.failed(error)
        self.last_receipt = receipt
        return receipt

    def _report(self, receipt: dict[str, Any]) -> None:
        generation = receipt["generation"]
        for step in receipt.get("steps", []):
            if step.get("drift"):
                self.metrics.drift.labels(step["kind"]).inc()
            if step.get("drift") and step["kind"] == "file":  # containers emit their own
                self.events.emit(
                    "drift",
                    f"{step.get('path', step['name'])} drifted; rewritten",
                    level="warning",
                    subject=step.get("path"),
                    generation=generation,
                    file=step["name"],
                )
            if step["result"] == "failed":
                self.events.emit(
                    "failure",
                    f"{step['kind']} {step['name']}: {step['detail']}",
                    level="warning",
                    generation=generation,
                )
        if receipt.get("error"):
            self.events.emit("failure", receipt["error"], level="error", generation=generation)
        written = [s for s in receipt.get("steps", []) if s["result"] != "failed"]
        if written or not receipt["ok"]:
            self.events.emit(
                "pass",
                f"pass for generation {generation}: {'ok' if receipt['ok'] else 'failed'}",
                level="info" if receipt["ok"] else "warning",
                generation=generation,
                ok=receipt["ok"],
                reason=receipt["reason"],
            )
