"""The update API's state machine (thar-be-updates), as pure functions over `UpdateStatus`.

Idle -> Available (refresh found an update) -> Staged (prepare wrote it to the inactive set)
-> Ready (activate flipped the flags) -> Staged again (deactivate). A command's outcome is
recorded in `most_recent_command`, failures included (the upstream fix of Nov 2020).

`check_command()` says whether a command may start (raising `NotAllowed` -> 409,
`NoChosenUpdate` / `NoStagedImage` -> 404); the `after_*` functions compute the next status
from the command's result. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from updates.gptprio import Sets
from updates.selection import (
    MAINTENANCE_WINDOW,
    UNCONFIRMED_BOOT,
    VERSION_LOCK,
    NoUpdate,
    pick,
)
from updates.semver import Version
from updates.timefmt import format_time

IDLE, AVAILABLE, STAGED, READY = "Idle", "Available", "Staged", "Ready"
ALLOWED = {
    "refresh": (IDLE, AVAILABLE, STAGED, READY),
    "prepare": (AVAILABLE, STAGED),
    "activate": (STAGED,),
    "deactivate": (READY,),
}


class CommandRefused(Exception):
    status = 500
    exit_code = 1


class NotAllowed(CommandRefused):
    status, exit_code = 409, 65


class NoChosenUpdate(CommandRefused):
    status, exit_code = 404, 66


class NoStagedImage(CommandRefused):
    status, exit_code = 404, 67


class Busy(CommandRefused):
    status, exit_code = 423, 64


class Uninitialized(Exception):
    """No update status yet (404): here, beside the refusals, so the API can answer it without
    loading the manager and its disk code on a host that has no OS disk."""

    status = 404

    def __init__(self) -> None:
        super().__init__("Update status is uninitialized, refresh-updates to initialize it")


@dataclass(frozen=True)
class Image:
    arch: str
    version: str
    variant: str

    def to_json(self) -> dict[str, str]:
        return {"arch": self.arch, "version": self.version, "variant": self.variant}


@dataclass(frozen=True)
class Partition:
    image: Image | None
    next_to_boot: bool

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image.to_json() if self.image else None,
                "next_to_boot": self.next_to_boot}


@dataclass(frozen=True)
class Command:
    cmd_type: str
    cmd_status: str  # Success | Failed | Unknown
    timestamp: datetime
    exit_status: int
    stderr: str

    def to_json(self) -> dict[str, Any]:
        return {"cmd_type": self.cmd_type, "cmd_status": self.cmd_status,
                "timestamp": format_time(self.timestamp), "exit_status": self.exit_status,
                "stderr": self.stderr}


@dataclass(frozen=True)
class UpdateStatus:
    update_state: str = IDLE
    available_updates: tuple[str, ...] = ()
    chosen_update: Image | None = None
    active_partition: Partition | None = None
    staging_partition: Partition | None = None
    most_recent_command: Command | None = None
    # Not in Bottlerocket's status: why no update is chosen (None when one is, or unknown).
    no_update_reason: NoUpdate | None = None
    progress: Mapping[str, Any] | None = None  # while prepare writes: bytes done / total

    def to_json(self) -> dict[str, Any]:
        return {
            "update_state": self.update_state,
            "available_updates": list(self.available_updates),
            "chosen_update": self.chosen_update.to_json() if self.chosen_update else None,
            "active_partition": self.active_partition.to_json() if self.active_partition
            else None,
            "staging_partition": self.staging_partition.to_json() if self.staging_partition
            else None,
            "most_recent_command": self.most_recent_command.to_json()
            if self.most_recent_command else None,
            "no_update_reason": self.no_update_reason.to_json() if self.no_update_reason
            else None,
            "progress": dict(self.progress) if self.progress else None,
        }


def initial(active: Image | None, next_is_active: bool) -> UpdateStatus:
    return UpdateStatus(active_partition=Partition(active, next_is_active))


def from_disk(sets: Sets, active: Image | None, inactive: Image | None) -> UpdateStatus:
    """The status the partition flags imply, for a daemon that kept none (it restarted).

    An update prepared (inactive set valid, priority 0) is Staged, one activated (inactive set
    valid and next to boot) is Ready; anything else is Idle. Bottlerocket keeps its status in a
    tmpfs file for the same reason: a service restart must not hide what the next boot does.
    """
    next_set = sets.next()
    status = initial(active, next_set == sets.active)
    flags = sets.get(sets.inactive)
    if inactive is None or flags.successful or flags.tries_left == 0:
        return status
    if flags.priority == 0:
        state = STAGED
    elif next_set == sets.inactive:
        state = READY
    else:
        return status
    return replace(status, update_state=state, chosen_update=inactive,
                   staging_partition=Partition(inactive, next_set == sets.inactive))


def check_command(status: UpdateStatus, command: str) -> None:
    """Raise when `command` may not start now (the synchronous errors of thar-be-updates)."""
    if command not in ALLOWED:
        raise NotAllowed(f"unknown update command {command!r}")
    if status.update_state not in ALLOWED[command]:
        raise NotAllowed(f"{command} is not allowed in state {status.update_state}")
    if command == "prepare" and status.chosen_update is None:
        raise NoChosenUpdate("No update has been chosen; refresh first")
    if command in ("activate", "deactivate") and status.staging_partition is None:
        raise NoStagedImage("No staged image; prepare an update first")


def choose(updates: Sequence[dict[str, Any]], running: Version,
           version_lock: Version | None) -> dict[str, Any] | None:
    """thar-be-updates' pick from updog's list (highest version first)."""
    ordered = sorted(updates, key=lambda u: Version.parse(u["version"]), reverse=True)
    return pick(ordered, running, version_lock, version=lambda u: Version.parse(u["version"]),
                max_version=lambda u: Version.parse(u["max_version"]))


def _image(u: dict[str, Any]) -> Image:
    return Image(u["arch"], u["version"], u["variant"])


def after_refresh(status: UpdateStatus, command: Command, updates: Sequence[dict[str, Any]],
                  running: Version, version_lock: Version | None, *,
                  reason: NoUpdate | None = None) -> UpdateStatus:
    """Refresh recomputes the list and the choice; only Idle/Available change state.

    `reason` is updog's account of why it would choose nothing; the API's own version lock
    (read from the settings, as thar-be-updates does) may differ, and then says so itself.
    """
    if command.cmd_status != "Success":
        updates = ()
    chosen = choose(updates, running, version_lock)
    if chosen is not None or command.cmd_status != "Success":
        reason = None
    elif reason is None and version_lock is not None:
        offered = ", ".join(sorted((u["version"] for u in updates), key=Version.parse))
        reason = NoUpdate(VERSION_LOCK, f"version-lock {version_lock} selects none of the "
                          f"applicable updates ({offered or 'none'})",
                          {"version_lock": str(version_lock)})
    ordered = sorted((u["version"] for u in updates), key=Version.parse, reverse=True)
    new = replace(status, available_updates=tuple(ordered),
                  chosen_update=_image(chosen) if chosen else None, most_recent_command=command,
                  no_update_reason=reason)
    if status.update_state in (IDLE, AVAILABLE):
        new = replace(new, update_state=AVAILABLE if chosen else IDLE)
    return new


def after_prepare(status: UpdateStatus, command: Command) -> UpdateStatus:
    if command.cmd_status == "Success":
        return replace(status, update_state=STAGED, most_recent_command=command,
                       staging_partition=Partition(status.chosen_update, False))
    # The inactive set was (or may have been) cleared: nothing is staged any more.
    return replace(status, update_state=AVAILABLE if status.chosen_update else IDLE,
                   staging_partition=None, most_recent_command=command)


def after_activate(status: UpdateStatus, command: Command) -> UpdateStatus:
    if command.cmd_status != "Success":
        return replace(status, most_recent_command=command)
    return replace(status, update_state=READY, most_recent_command=command,
                   staging_partition=_flip(status.staging_partition, True),
                   active_partition=_flip(status.active_partition, False))


def after_deactivate(status: UpdateStatus, command: Command) -> UpdateStatus:
    if command.cmd_status != "Success":
        return replace(status, most_recent_command=command)
    return replace(status, update_state=STAGED, most_recent_command=command,
                   staging_partition=_flip(status.staging_partition, False),
                   active_partition=_flip(status.active_partition, True))


def _flip(p: Partition | None, next_to_boot: bool) -> Partition | None:
    return replace(p, next_to_boot=next_to_boot) if p else None


def hold_reason(state: str, in_window: bool, boot_confirmed: bool, window: Mapping[str, Any]
                ) -> NoUpdate | None:
    """Why automatic updates wait (pure): outside the maintenance window, or an update is
    available but this boot, whose fallback it would overwrite, is not confirmed yet."""
    if not in_window and state in (IDLE, AVAILABLE, STAGED):
        return NoUpdate(MAINTENANCE_WINDOW, f"automatic updates wait for the maintenance window "
                        f"{window.get('start')}-{window.get('end')} UTC",
                        {"start": window.get("start"), "end": window.get("end")})
    if state == AVAILABLE and not boot_confirmed:
        return NoUpdate(UNCONFIRMED_BOOT, "this boot is not marked successful yet: the other "
                        "set is its fallback and is not overwritten before then")
    return None


def auto_command(state: str, in_window: bool, boot_confirmed: bool = True) -> str | None:
    """Automatic updates: the next command to run in a maintenance window (never a reboot).

    Nothing is prepared before this boot is marked successful: preparing clears the other set,
    which is the fallback of a boot that has not been confirmed.
    """
    if not in_window or (state == AVAILABLE and not boot_confirmed):
        return None
    return {IDLE: "refresh", AVAILABLE: "prepare", STAGED: "activate"}.get(state)


def in_window(now: datetime, start: str | None, end: str | None) -> bool:
    """Whether `now` (UTC) is within the daily window [start, end) given as "HH:MM".

    No window means always; end before start wraps past midnight; start == end is all day.
    """
    if not start or not end:
        return True
    minute = now.hour * 60 + now.minute
    s, e = (int(t[:2]) * 60 + int(t[3:5]) for t in (start, end))
    if s == e:
        return True
    return s <= minute < e if s < e else minute >= s or minute < e
