"""The updates executor: automatic-update policy, the update dispatcher and the boot gate.

Wiring (daemon): one `UpdatesExecutor` per host with an OS disk, `host.updates` (typed; None
without a disk); `host.after_pass` calls its `after_pass`; the API takes its manager
(`reconciler.api.updates_routes.register`). A pass calls `observe`, decides with the pure
`reconciler.update_policy.decide_update` (the dry run too), then `execute`s the decision.

* Policy (`settings.updates.automatic`, `settings.updates.maintenance-window.{start,end}` in
  UTC, off by default): each pass inside the window starts the next command of
  refresh -> prepare -> activate in the background; the manager wakes the worker when it ends.
  Without `settings.updates.automatic-reboot` it never reboots: activation takes effect at the
  next reboot an operator (or orchestrator) chooses. With it, the pass after activation reboots
  the host through `reboot` (the daemon's `reboot_host`: a reboot slot first when
  `settings.coordination.reboot-lock` is set; refused, the host waits and asks again). Nothing
  is prepared before the boot gate confirmed this boot, and a failed step (or a refresh that
  found nothing) is retried an hour later (`retry_after`), not at every pass.
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

from reconciler.fleet.reboots import RebootOutcome
from reconciler.logs import get_logger
from reconciler.migrator import rehearse
from reconciler.steps import Step
from reconciler.store import Store
from reconciler.supervise import Loops, supervised_thread
from reconciler.update_policy import (
    REBOOT,
    RETRY_AFTER,
    UpdateDecision,
    UpdateObservation,
    decide_update,
)
from updates import status as sm
from updates.apply import MigrationCache
from updates.errors import UpdateError
from updates.health import BootGate
from updates.manager import UpdateManager
from updates.rollback import RollbackWatch
from updates.semver import Version, VersionError, parse_version_lock
from updates.timefmt import utcnow

log = get_logger("updates")


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
        self.events: Any = None  # the daemon's event journal (set when it wires us)
        self.rollback: RollbackWatch | None = None
        self.loops = Loops()  # the daemon's, once attached: the boot gate reports there
        # How to reboot into an activated update (the daemon's reboot path, slot included);
        # None: this process cannot reboot the host (``serve --once``, tools).
        self.reboot: Callable[[], RebootOutcome] | None = None
        self.reboot_requested = False  # once per daemon: the reboot ends it

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

        def rehearse_activation(status: sm.UpdateStatus) -> None:
            staged = status.staging_partition.image if status.staging_partition else None
            if staged is None or not staged.version:
                return  # updog reports what is missing
            trusted = Path(root) / "usr/share/updog/root.json"
            try:
                rehearse(store.path, trusted.read_bytes(),
                         MigrationCache.under(Path(root) / "var/lib/updog"), staged.version)
            except (OSError, UpdateError) as e:
                raise UpdateError(f"refusing to activate {staged.version}: its migrations fail "
                                  f"on a copy of the store: {e}") from None

        manager = UpdateManager(updog_command(root), disk=disk, version_lock=version_lock,
                                on_done=on_done, before={"activate": rehearse_activation})
        executor = cls(store, manager, BootGate(disk, dict(os_env or {})))
        executor.rollback = RollbackWatch(disk)
        return executor

    # -- the Executor protocol: observe, decide (pure), execute

    def observe(self) -> UpdateObservation:
        """The manager's state, the boot gate's verdict and the retry memory, now."""
        current = self.manager.peek()
        last = current.most_recent_command if current else None
        return UpdateObservation(
            now=self.clock(),
            monotonic=self.monotonic(),
            busy=self.manager.busy,
            state=current.update_state if current else sm.IDLE,
            last_failed=(
                (last.cmd_type, last.timestamp) if last and last.cmd_status == "Failed" else None
            ),
            last_auto=self.last_auto,
            last_refresh=last.timestamp if last and last.cmd_type == "refresh" else None,
            reboot_requested=self.reboot_requested,
            confirmed=self.gate is None or bool((self.gate.outcome or {}).get("marked_successful")),
            failure_seen=self._failure,
            retry_at=self._retry_at,
            retry_after=self.retry_after,
        )

    @staticmethod
    def decide(settings: Mapping[str, Any], observation: UpdateObservation) -> UpdateDecision:
        return decide_update(settings, observation)

    @staticmethod
    def dry_run(decision: UpdateDecision) -> list[dict[str, Any]]:
        return [] if decision.command is None else [
            {"kind": "update", "name": decision.command, "result": "would start",
             "detail": "automatic update policy"}]

    def execute(self, decision: UpdateDecision) -> list[Step]:
        """Remember the retry clock the decision started, then start its command, if any."""
        self._failure, self._retry_at = decision.failure_seen, decision.retry_at
        if decision.sets_hold:
            self.manager.hold = decision.hold
        command = decision.command
        if command is None:
            return []
        if command == REBOOT:
            return [self._reboot()]
        try:
            self.manager.start(command)
        except sm.CommandRefused as e:
            return [Step("update", command, "skipped", str(e))]
        self.last_auto = command
        return [Step("update", command, "started", "automatic update policy")]

    def _reboot(self) -> Step:
        """Reboot into the activated update; a refused slot is a wait, not a failure."""
        self.last_auto = REBOOT
        if self.reboot is None:
            return Step("update", REBOOT, "skipped", "this process cannot reboot the host")
        current = self.manager.peek()
        staged = current.staging_partition if current else None
        version = staged.image.version if staged and staged.image else "the activated update"
        outcome = self.reboot()
        if outcome.result == "deferred":
            return Step("update", REBOOT, "waiting", outcome.detail)
        if outcome.result == "failed":
            return Step("update", REBOOT, "failed", f"reboot into {version}: {outcome.detail}")
        self.reboot_requested = True
        return Step("update", REBOOT, "started", f"reboot into {version}: {outcome.detail}")

    def reconcile(self, settings: Mapping[str, Any], generation: int = 0,
                  changed: set[str] | None = None) -> list[dict[str, Any]]:
        """Observe, decide and execute in one call (tests and tools; a pass does the three)."""
        decision = self.decide(settings, self.observe())
        return [step.as_dict() for step in self.execute(decision)]

    def plan(self, settings: Mapping[str, Any]) -> list[dict[str, Any]]:
        """What a pass would start now (changes nothing, not even the retry clock)."""
        return self.dry_run(self.decide(settings, self.observe()))

    def status(self) -> dict[str, Any]:
        current = self.manager.peek()
        command = current.most_recent_command if current else None
        return {
            "update_state": current.update_state if current else None,
            "most_recent_command": command.to_json() if command else None,
            "busy": self.manager.busy,
            "progress": self.manager.progress(),
            "boot": self.gate.outcome if self.gate else None,
            "rollback": self.rollback.condition() if self.rollback else None,
        }

    def conditions(self) -> list[dict[str, Any]]:
        return [self.rollback.condition()] if self.rollback else []

    # -- the worker's after_pass hook

    def after_pass(self, receipt: Mapping[str, Any]) -> None:
        """After the first pass, start the boot gate in a thread of its own.

        Health checks may run for minutes; the hook runs on the daemon's event loop, which must
        keep answering the API (and SIGTERM) meanwhile. `status()` shows the outcome once known.
        """
        if self.rollback is not None and not self.manager.busy:
            self.rollback.maybe_start()  # re-checks the set a rollback would boot, when due
        if self.gate is None or self._gate_thread is not None:
            return
        updates = self.store.live_document().get("updates")
        gate = self.gate

        def failed(error: BaseException) -> None:  # the boot does not count, and status says why
            gate.outcome = {"marked_successful": False, "health_checks": [],
                            "reason": f"boot gate failed: {type(error).__name__}: {error}"}
            if self.events is not None:
                self.events.emit("boot-health", f"boot NOT marked successful: "
                                 f"{gate.outcome['reason']}", level="error",
                                 marked_successful=False)

        ok = bool(receipt.get("ok"))
        self._gate_thread = supervised_thread(
            self.loops.health("boot-gate"), lambda: self._gate(ok, updates), failed)

    def _gate(self, pass_ok: bool, updates: Any) -> None:
        """Run the boot gate, then say what it decided: a log line and an event either way."""
        assert self.gate is not None
        outcome = self.gate.after_first_pass(pass_ok, updates)
        failed = [c["name"] for c in outcome.get("health_checks", []) if not c["ok"]]
        marked = bool(outcome.get("marked_successful"))
        if marked:
            message = f"boot marked successful (set {outcome.get('set')})"
        else:
            message = f"boot NOT marked successful: {outcome.get('reason')}"
        level = "info" if marked else "warning"
        if self.events is not None:  # the event is the log line too
            self.events.emit("boot-health", message, level=level, marked_successful=marked,
                             failed_checks=failed)
        else:
            getattr(log, level)(message, kind="boot-health", failed_checks=failed)
