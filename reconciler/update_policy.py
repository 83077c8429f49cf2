"""The automatic-update policy, pure: which update command a pass starts, from plain data.

Why apart from the executor: the pass and its dry run decide with this one function
(``reconciler.passplan``), and deciding must never start the retry clock: the
``UpdateDecision`` carries the clock, and only the executor's ``execute`` remembers it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from updates import status as update_status

RETRY_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class UpdateObservation:
    """What the automatic-update policy decides on (``decide_update``)."""

    now: datetime  # the maintenance window is wall-clock time
    monotonic: float  # delays are not: a wall clock corrected by a day must not move them
    busy: bool
    state: str
    last_failed: tuple[str, datetime] | None  # (command, timestamp) of a failed last command
    last_auto: str | None  # the last command the policy started (None: never, since start)
    confirmed: bool  # the boot gate marked this boot successful (or there is no gate)
    failure_seen: datetime | None  # timestamp of the failed step being waited out
    retry_at: float  # monotonic seconds
    retry_after: timedelta = RETRY_AFTER


@dataclass(frozen=True)
class UpdateDecision:
    """The command to start (or None), the retry clock to remember once carried out and, when
    ``sets_hold``, why automatic updates wait (``UpdateManager.hold``, in the update status)."""

    command: str | None
    failure_seen: datetime | None
    retry_at: float  # monotonic seconds
    hold: update_status.NoUpdate | None = None
    sets_hold: bool = False


def decide_update(settings: Mapping[str, Any], seen: UpdateObservation) -> UpdateDecision:
    """The automatic-update policy, pure: which command a pass starts now, if any.

    A failed automatic step is retried ``retry_after`` after the first pass that saw it fail,
    not at every pass; the clock starts when the decision is carried out, never in a dry run.
    """
    keep = UpdateDecision(None, seen.failure_seen, seen.retry_at)
    updates = settings.get("updates") or {}
    if not updates.get("automatic", False) or seen.busy:
        return keep
    window = updates.get("maintenance-window") or {}
    in_window = update_status.in_window(seen.now, window.get("start"), window.get("end"))
    failure_seen, retry_at = seen.failure_seen, seen.retry_at
    if seen.last_failed and seen.last_failed[0] != "refresh" and seen.last_auto:
        if failure_seen != seen.last_failed[1]:
            failure_seen = seen.last_failed[1]
            retry_at = seen.monotonic + seen.retry_after.total_seconds()
        if seen.monotonic < retry_at:
            return UpdateDecision(None, failure_seen, retry_at)
    hold = update_status.hold_reason(seen.state, in_window, seen.confirmed, window)
    command = update_status.auto_command(seen.state, in_window, seen.confirmed)
    return UpdateDecision(command, failure_seen, retry_at, hold, sets_hold=True)
