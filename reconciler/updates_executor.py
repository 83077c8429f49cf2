"""The updates executor: automatic-update policy, the update dispatcher and the boot gate.

Wiring (daemon): one `UpdatesExecutor` per host with an OS disk, appended to
`host.reconciler.executors`; its `after_pass` goes into `worker.after_pass`; the API finds it
by name (`reconciler.api.updates_routes.register`).

* Policy (`settings.updates.automatic`, `settings.updates.maintenance-window.{start,end}` in
  UTC, off by default): each pass inside the window starts the next command of
  refresh -> prepare -> activate in the background; the manager wakes the worker when it ends.
  It never reboots: activation takes effect at the next reboot an operator (or orchestrator)
  chooses. Nothing is prepared before the boot gate confirmed this boot, and a failed step is
  retried an hour later (`retry_after`), not at every pass.
* Boot gate: after the first pass, mark the booted set successful when the pass succeeded and
  the declared health checks passed (`updates.health`).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from reconciler.store import Store
from reconciler.supervise import Loops, supervised_thread
from updates import status as sm
from updates.health import BootGate
from updates.manager import UpdateManager
from updates.semver import Version, VersionError, parse_version_lock
from updates.timefmt import utcnow

RETRY_AFTER = timedelta(hours=1)


def updog_command(root: Path) -> list[str]:
    """updog as a child process, reading `<root>/etc/updog.toml` and keeping state under root."""
    return [sys.executable, "-m", "updates.updog", "--root", str(root)]


class UpdatesExecutor:
    name = "updates"

    def __init__(self, store: Store, manager: UpdateManager, gate: BootGate | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 retry_after: timedelta = RETRY_AFTER,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.manager = manager
        self.gate = gate
        self.clock = clock
        self.retry_after = retry_after
        self.monotonic = monotonic  # delays: a wall clock corrected by a day must not move them
        self.last_auto: str | None = None
        self._failure: datetime | None = None  # timestamp of the failed step being waited out
        self._retry_at = float("-inf")  # monotonic seconds
        self._gate_thread: threading.Thread | None = None
        self.loops = Loops()  # the daemon's, once attached: the boot gate reports there

    @classmethod
    def for_host(cls, store: Store, root: Path, disk: str | None, *,
                 os_env: Mapping[str, str] | None = None,
                 on_done: Callable[[sm.UpdateStatus], None] | None = None) -> UpdatesExecutor:
        def version_lock() -> Version | None:
            lock = store.get(["settings.updates.version-lock"]).get(
                "settings.updates.version-lock", "latest")
            try:
                return parse_version_lock(lock)
            except VersionError:
                return None

        manager = UpdateManager(updog_command(root), disk=disk, version_lock=version_lock,
                                on_done=on_done)
        return cls(store, manager, BootGate(disk, dict(os_env or {})))

    # -- the Executor protocol

    def _policy(self, settings: Mapping[str, Any]) -> tuple[bool, bool]:
        updates = settings.get("updates") or {}
        window = updates.get("maintenance-window") or {}
        return bool(updates.get("automatic", False)), sm.in_window(
            self.clock(), window.get("start"), window.get("end"))

    def _next(self, settings: Mapping[str, Any]) -> str | None:
        automatic, in_window = self._policy(settings)
        if not automatic or self.manager.busy:
            return None
        current = self.manager.peek()
        state = current.update_state if current else sm.IDLE
        last = current.most_recent_command if current else None
        if last and last.cmd_status == "Failed" and last.cmd_type != "refresh" and self.last_auto:
            # A failed automatic step is retried after `retry_after`, not at every pass.
            if self._failure != last.timestamp:
                self._failure = last.timestamp
                self._retry_at = self.monotonic() + self.retry_after.total_seconds()
            if self.monotonic() < self._retry_at:
                return None
        confirmed = self.gate is None or bool((self.gate.outcome or {}).get("marked_successful"))
        return sm.auto_command(state, in_window, confirmed)

    def reconcile(self, settings: Mapping[str, Any], generation: int,
                  changed: set[str]) -> list[dict[str, Any]]:
        command = self._next(settings)
        if command is None:
            return []
        try:
            self.manager.start(command)
        except sm.CommandRefused as e:
            return [{"kind": "update", "name": command, "result": "skipped", "detail": str(e)}]
        self.last_auto = command
        return [{"kind": "update", "name": command, "result": "started",
                 "detail": "automatic update policy"}]

    def plan(self, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
        command = self._next(settings)
        return [] if command is None else [
            {"kind": "update", "name": command, "result": "would start",
             "detail": "automatic update policy"}]

    def status(self) -> dict[str, Any]:
        current = self.manager.peek()
        return {
            "update_state": current.update_state if current else None,
            "busy": self.manager.busy,
            "boot": self.gate.outcome if self.gate else None,
        }

    # -- the worker's after_pass hook

    def after_pass(self, receipt: Mapping[str, Any]) -> None:
        """After the first pass, start the boot gate in a thread of its own.

        Health checks may run for minutes; the hook runs on the daemon's event loop, which must
        keep answering the API (and SIGTERM) meanwhile. `status()` shows the outcome once known.
        """
        if self.gate is None or self._gate_thread is not None:
            return
        updates = self.store.live_document().get("updates")
        gate = self.gate

        def failed(error: BaseException) -> None:  # the boot does not count, and status says why
            gate.outcome = {"marked_successful": False, "health_checks": [],
                            "reason": f"boot gate failed: {type(error).__name__}: {error}"}

        self._gate_thread = supervised_thread(
            self.loops.health("boot-gate"),
            lambda: gate.after_first_pass(bool(receipt.get("ok")), updates), failed)
