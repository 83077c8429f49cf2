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
REBOOT = "reboot"  # not an update command: the executor reboots into the activated update


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
    last_refresh: datetime | None = None  # timestamp of the last command, when it was a refresh
    reboot_requested: bool = False  # this daemon already asked for the reboot into the update


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
    A refresh that left the host Idle (nothing to update to, or the repository unreachable) is
    such a step too: without that, every finished refresh would wake a pass that starts the
    next one. With ``automatic-reboot``, an activated update (Ready) is followed by ``reboot``,
    once per daemon: the executor takes a reboot slot first when the host is coordinated.
    """
    keep = UpdateDecision(None, seen.failure_seen, seen.retry_at)
    updates = settings.get("updates") or {}
    if not updates.get("automatic", False) or seen.busy:
        return keep
    window = updates.get("maintenance-window") or {}
    in_window = update_status.in_window(seen.now, window.get("start"), window.get("end"))
    failure_seen, retry_at = seen.failure_seen, seen.retry_at
    waited = seen.last_failed if seen.last_failed and seen.last_failed[0] != "refresh" else None
    if seen.state == update_status.IDLE and seen.last_refresh is not None:
        waited = ("refresh", seen.last_refresh)  # it found nothing (or failed): look again later
    if waited and seen.last_auto:
        if failure_seen != waited[1]:
            failure_seen = waited[1]
            retry_at = seen.monotonic + seen.retry_after.total_seconds()
        if seen.monotonic < retry_at:
            return UpdateDecision(None, failure_seen, retry_at)
    hold = update_status.hold_reason(seen.state, in_window, seen.confirmed, window)
    command = update_status.auto_command(seen.state, in_window, seen.confirmed)
    if (command is None and seen.state == update_status.READY and in_window
            and updates.get("automatic-reboot", False) and not seen.reboot_requested):
        command = REBOOT
    return UpdateDecision(command, failure_seen, retry_at, hold, sets_hold=True)
