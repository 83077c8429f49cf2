"""Reboot slots for this host: taken before a reboot, given back once the new boot is confirmed.

Zincati's state machine, on our settings (``settings.coordination``): before rebooting, take a
slot of the host's group from the FleetLock server (refused: the reboot waits, and status says
who holds the slots); the slot is recorded in the store, so that after the reboot the daemon
knows it holds one; it gives it back (``steady-state``) only once the new boot is confirmed:
the first pass succeeded and, on a host with A/B updates, the boot health gate marked the boot
successful. A boot that fails its gate keeps the slot, so the fleet does not reboot a second
host into the same update while this one falls back. At start-up a slot held from before is
released the same way (Zincati's initialization step), so a host never holds one forever.
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hostcore.commands import CommandResult, CommandRunner
from reconciler.fleet.client import FleetLockClient, LockRejection
from reconciler.fleet.protocol import DEFAULT_GROUP, ClientParams
from reconciler.logs import get_logger
from reconciler.store import Store
from reconciler.supervise import Wakeup

SLOT_META = "reboot-slot"
DEFAULT_RETRY = 60.0  # seconds between two requests for a slot while all are held
_log = get_logger("reboots")


class SlotRefused(Exception):
    """No reboot slot now; ``str()`` says which group and who holds its slots."""


@dataclass(frozen=True)
class LockSettings:
    url: str
    group: str
    node_id: str
    retry_interval: float = DEFAULT_RETRY

    def client(self) -> FleetLockClient:
        return FleetLockClient(self.url, ClientParams(self.node_id, self.group))


def lock_settings(settings: Mapping[str, Any]) -> LockSettings | None:
    """The reboot lock of the live settings document (the inside of ``settings``), if any."""
    coordination = settings.get("coordination") or {}
    lock = coordination.get("reboot-lock") or {}
    if not lock.get("url") or not coordination.get("node-id"):
        return None
    return LockSettings(lock["url"], lock.get("group", DEFAULT_GROUP), coordination["node-id"],
                        float(lock.get("retry-interval", DEFAULT_RETRY)))


class RebootSlots:
    """The daemon's side of reboot coordination. ``boot_confirmed`` says whether this boot
    counts (first pass ok, health gate passed); ``on_retry`` is called once the group's
    ``retry-interval`` has passed since a refused request (the daemon wakes a pass, whose
    update policy asks again)."""

    RETRY = 5.0

    def __init__(self, store: Store, boot_confirmed: Callable[[], bool],
                 on_retry: Callable[[], None] | None = None):
        self.store = store
        self.boot_confirmed = boot_confirmed
        self.on_retry = on_retry
        self.retry_at = float("inf")  # monotonic seconds: when a refused request is tried again
        # This daemon's start: a slot taken by this very process is for a reboot still to come.
        self.instance = uuid.uuid4().hex
        self.state = "idle"  # idle | holding | waiting | releasing
        self.reason = ""
        self.wakeup = Wakeup()
        self.poke, self.stop = self.wakeup.poke, self.wakeup.stop

    def status(self) -> dict[str, Any]:
        held = self.store.get_meta(SLOT_META)
        return {"state": self.state, "reason": self.reason, "held": held}

    def before_reboot(self, settings: Mapping[str, Any]) -> LockSettings | None:
        """Take a slot for the reboot (None: not coordinated); SlotRefused when none is free."""
        lock = lock_settings(settings)
        if lock is None:
            return None
        try:
            lock.client().pre_reboot()
        except LockRejection as error:
            self._refused(lock, f"waiting for a reboot slot in group {lock.group}: {error.value}")
        except OSError as error:
            self._refused(lock, f"waiting for a reboot slot in group {lock.group}: {lock.url}: "
                          f"{error}")
        self.store.set_meta(SLOT_META, {"url": lock.url, "group": lock.group,
                                        "id": lock.node_id, "since": time.time(),
                                        "taken_by": self.instance})
        self.state, self.reason = "holding", f"holding a reboot slot in group {lock.group}"
        _log.info("reboot slot taken", group=lock.group, id=lock.node_id)
        return lock

    def _refused(self, lock: LockSettings, reason: str) -> None:
        self.state, self.reason = "waiting", reason
        self.retry_at = time.monotonic() + lock.retry_interval  # run() sees it once poked
        raise SlotRefused(reason) from None

    def _due_retry(self) -> float | None:
        """Call ``on_retry`` when a refused request is due again; seconds until then, if any."""
        if self.state != "waiting" or self.on_retry is None or self.retry_at == float("inf"):
            return None
        left = self.retry_at - time.monotonic()
        if left > 0:
            return left
        self.retry_at = float("inf")  # the next refusal sets it again
        self.on_retry()
        return None

    async def run(self) -> None:
        """Give back a held slot once the boot is confirmed; report and retry, never die."""
        while not self.wakeup.stopping:
            timeout = None
            try:
                held = await asyncio.to_thread(self.store.get_meta, SLOT_META)
                rebooted = held and held.get("taken_by") != self.instance
                if rebooted and self.boot_confirmed():
                    self.state = "releasing"
                    lock = LockSettings(held["url"], held["group"], held["id"])
                    await asyncio.to_thread(lock.client().steady_state)
                    await asyncio.to_thread(self.store.set_meta, SLOT_META, None)
                    self.state, self.reason = "idle", f"released the reboot slot in {lock.group}"
                    _log.info("reboot slot released", group=lock.group, id=lock.node_id)
                    continue
                if rebooted:
                    self.state = "holding"
                    self.reason = (f"holding a reboot slot in group {held['group']} until this "
                                   "boot is confirmed")
                    timeout = self.RETRY
            except Exception as error:  # the lock server is down, the store is locked...
                self.reason = f"cannot release the reboot slot: {type(error).__name__}: {error}"
                _log.warning("reboot slot release failed", error=self.reason)
                timeout = self.RETRY
            retry = self._due_retry()
            if retry is not None:
                timeout = retry if timeout is None else min(timeout, retry)
            await self.wakeup.wait(timeout)


@dataclass(frozen=True)
class RebootOutcome:
    """What became of a reboot request: ``requested`` (the host is going down), ``skipped``
    (a sandbox root: the slot is taken all the same, to test it), ``deferred`` (no slot free:
    ``detail`` says who holds them) or ``failed`` (``shutdown`` failed)."""

    result: str
    detail: str


def reboot_host(slots: RebootSlots | None, settings: Mapping[str, Any], events: Any,
                runner: CommandRunner, sandbox: bool,
                why: str = "reboot requested") -> RebootOutcome:
    """Reboot the host, through its reboot slot when it is coordinated (blocking: call it off
    the event loop). One path for ``POST /actions/reboot`` and the automatic reboot into an
    update, so both wait for a slot the same way and both are in ``/events``."""
    if slots is not None:
        try:
            lock = slots.before_reboot(settings)
        except SlotRefused as error:
            events.emit("reboot", f"reboot deferred: {error}", level="warning")
            return RebootOutcome("deferred", str(error))
        if lock is not None:
            events.emit("reboot", f"reboot slot taken in group {lock.group}")
    if sandbox:
        events.emit("reboot", f"{why}; skipped: the root is a sandbox, not the host")
        return RebootOutcome("skipped", "the root is a sandbox, not the host")
    result = runner.run(("shutdown", "-r", "now"), {}, 30.0)
    if not result.ok and not _stopped_by_its_reboot(result):
        return RebootOutcome("failed", f"{result.error or result.returncode}: {result.output}")
    events.emit("reboot", why)
    return RebootOutcome("requested", why)


def _stopped_by_its_reboot(result: CommandResult) -> bool:
    """``shutdown`` ended by SIGTERM: systemd starts stopping the services, ours and every
    process in its cgroup with it, as soon as the reboot job is queued, which can be before
    ``shutdown`` has exited. The reboot it asked for is under way, not failed."""
    return result.error is None and result.returncode == -signal.SIGTERM
