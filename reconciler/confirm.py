"""Try and confirm: a commit that returns to the previous generation unless it is confirmed.

Talos's ``apply --mode try`` and Junos's ``commit confirmed``: an operator who changes a setting
that may cut off their own access (the SSH port of the admin container, a proxy, DNS) commits it
with a deadline. Without ``POST /tx/confirm`` before the deadline, or when the pass that applies
it fails, the host rolls its settings back to the generation before, by itself.

The deadline is kept in the store, in the same SQLite transaction as the commit, as wall-clock
time: it survives a daemon restart and a crash (a monotonic clock does not survive a reboot), and
a deadline found already past at start-up reverts at once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from reconciler.schema import Schema
from reconciler.store import Actor, CommitResult, NothingToCommit, Store
from reconciler.supervise import Wakeup

META = "pending-confirmation"
MAX_SECONDS = 24 * 3600


class NothingToConfirm(Exception):
    """No commit is waiting for a confirmation."""


@dataclass(frozen=True)
class Pending:
    """Generation ``generation`` was committed on trial; ``previous`` comes back at ``deadline``."""

    generation: int
    previous: int
    deadline: float  # epoch seconds
    tx: str

    def as_dict(self) -> dict[str, Any]:
        return {"generation": self.generation, "previous": self.previous,
                "deadline": self.deadline, "tx": self.tx}

    @classmethod
    def of(cls, value: Any) -> Pending | None:
        if not isinstance(value, dict):
            return None
        return cls(int(value["generation"]), int(value["previous"]), float(value["deadline"]),
                   str(value.get("tx", "")))


def check_seconds(text: str) -> float:
    """``confirm=SECONDS``: a finite number of seconds in (0, 24 h], or ValueError."""
    seconds = float(text)
    if not 0 < seconds <= MAX_SECONDS:  # also refuses NaN
        raise ValueError(f"confirm must be a number of seconds in (0, {MAX_SECONDS}]")
    return seconds


def pending(store: Store) -> Pending | None:
    return Pending.of(store.get_meta(META))


def commit_on_trial(
    store: Store, tx: str, schema: Schema, seconds: float, actor: Actor | None = None
) -> CommitResult:
    """Commit ``tx`` and record, in the same transaction, when it must be confirmed by."""
    previous = store.generation()
    deadline = time.time() + seconds
    trial = {"generation": previous + 1, "previous": previous, "deadline": deadline, "tx": tx}
    return store.commit(tx, schema, meta={META: trial}, actor=actor)


def confirm(store: Store) -> Pending:
    current = pending(store)
    if current is None:
        raise NothingToConfirm("no commit is waiting for a confirmation")
    store.set_meta(META, None)
    return current


def revert(store: Store, schema: Schema, trial: Pending) -> CommitResult | None:
    """The settings of ``trial.previous`` back, as a new commit (None: already there)."""
    try:
        result = store.rollback(trial.previous, schema)
    except NothingToCommit:
        result = None
    if pending(store) == trial:
        store.set_meta(META, None)
    return result


class ConfirmWatch:
    """The daemon's side: reverts a trial at its deadline, or at once when its pass fails.

    Woken by :meth:`poke` (a trial commit, a confirmation) and by its own deadline; it reads the
    pending trial from the store each time, so a restart simply picks it up again. It never dies:
    an error (a full disk, a locked store) is logged and retried a little later.
    """

    RETRY = 2.0

    def __init__(self, host: Any, events: Any, wake: Any):
        self.host, self.events, self.wake = host, events, wake
        self._failed: Pending | None = None
        self.wakeup = Wakeup()
        self.poke, self.stop = self.wakeup.poke, self.wakeup.stop

    def after_pass(self, receipt: dict[str, Any]) -> None:
        trial = pending(self.host.store)
        failed = not receipt.get("ok", True)
        if trial and failed and receipt.get("generation", 0) >= trial.generation:
            self._failed = trial
            self.poke()

    async def run(self) -> None:
        import asyncio

        from reconciler.logs import get_logger

        log = get_logger("confirm")
        while not self.wakeup.stopping:
            timeout: float | None = None
            try:
                trial = await asyncio.to_thread(pending, self.host.store)
                if trial is not None:
                    failed = self._failed == trial
                    left = trial.deadline - time.time()
                    if failed or left <= 0:
                        await asyncio.to_thread(revert, self.host.store, self.host.schema, trial)
                        why = ("its reconcile pass failed" if failed
                               else "it was not confirmed in time")
                        message = (f"generation {trial.generation} rolled back to the settings "
                                   f"of generation {trial.previous}: {why}")
                        self.events.emit("confirm", message, level="warning",
                                         generation=trial.generation, previous=trial.previous)
                        self._failed = None
                        self.wake("confirmation expired")
                        continue
                    timeout = left
            except Exception as error:  # report and retry: this task must not die
                log.error("confirmation watch failed", error=f"{type(error).__name__}: {error}")
                timeout = self.RETRY
            await self.wakeup.wait(timeout)
