"""The update dispatcher behind the API (Bottlerocket's thar-be-updates), in-process.

`UpdateManager.start(command)` validates the command against the state machine while holding
the dispatcher lock (423 if another command runs), then runs `updog` in a child process on a
worker thread and returns at once, as thar-be-updates' parent does. When updog exits, the new
status (success or failure, exit status, stderr) is computed by `updates.status` and kept.
Each command has its own deadline (`DEADLINES`): past it updog is killed and the command fails
saying so, so the dispatcher lock (and the API's 423) is held no longer than that. updog dies
with the daemon too (PR_SET_PDEATHSIG): no orphan holds the update cache's lock.
The status lives in memory; a daemon that starts (after a reboot or a restart) reads it off the
partition flags, so an update staged or activated before the restart is still reported.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from hostcore.commands import die_with_parent
from updates import status as sm
from updates.gpt import GptError
from updates.partitions import DiskError, open_os_disk
from updates.selection import NoUpdate
from updates.semver import Version
from updates.status import Uninitialized
from updates.timefmt import utcnow

UPDOG = {
    "refresh": ["check-update", "--all", "--json", "--with-reason"],
    "prepare": ["update-image", "--json"],
    "activate": ["update-apply"],
    "deactivate": ["update-revert"],
}

# Seconds each updog command may run. refresh fetches metadata and the manifest only (a few
# files, each within updog's own per-file `download_deadline`); prepare downloads and writes the
# images; activate and deactivate only flip partition flags.
DEADLINES = {"refresh": 900.0, "prepare": 3600.0, "activate": 300.0, "deactivate": 300.0}


class UpdateManager:
    """Runs one update command at a time and keeps the update status."""

    def __init__(
        self,
        updog: Sequence[str],
        *,
        disk: str | None,
        version_lock: Callable[[], Version | None] = lambda: None,
        on_done: Callable[[sm.UpdateStatus], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        deadlines: Mapping[str, float] | None = None,
        before: Mapping[str, Callable[[sm.UpdateStatus], None]] | None = None,
    ) -> None:
        self.updog = list(updog)
        # Checks run before a command's updog; one that raises fails the command with its
        # message (the daemon rehearses activation's migrations on a copy of its store here).
        self.before = dict(before or {})
        self.running: str | None = None  # the command in progress
        self.hold: NoUpdate | None = None  # why automatic updates wait (set by the policy)
        self._progress_file: Path | None = None
        self.disk = disk
        self.version_lock = version_lock
        self.on_done = on_done
        self.clock = clock
        self.deadlines = {**DEADLINES, **(deadlines or {})}
        self._lock = threading.Lock()
        self._status: sm.UpdateStatus | None = None
        self._thread: threading.Thread | None = None

    # -- reading

    @property
    def busy(self) -> bool:
        return self._lock.locked()

    def status(self) -> sm.UpdateStatus:
        """The current status; 423 while a command runs, 404 before the first command (unless
        the disk holds a staged or activated update: see `updates.status.from_disk`)."""
        if not self._lock.acquire(blocking=False):
            raise sm.Busy("An update command is in progress; try again when it finishes")
        try:
            if self._status is None:
                try:
                    found = self._initial()
                except (DiskError, GptError, OSError, sm.CommandRefused):
                    found = None  # the first command reports what is wrong with the disk
                if found is None or found.update_state == sm.IDLE:
                    raise Uninitialized()
                self._status = found
            if self.hold is not None and self._status.no_update_reason is None:
                return replace(self._status, no_update_reason=self.hold)
            return self._status
        finally:
            self._lock.release()

    def progress(self) -> dict[str, Any] | None:
        """Bytes done / total of the image prepare is writing now (None when idle)."""
        path, command = self._progress_file, self.running
        if path is None or command is None:
            return None
        try:
            found = json.loads(path.read_text())
        except (OSError, ValueError):
            found = {}
        return {"command": command, **found}

    def peek(self) -> sm.UpdateStatus | None:
        """The last complete status, without waiting or raising (for GET /status)."""
        return self._status

    def _initial(self) -> sm.UpdateStatus:
        with open_os_disk(self.disk, writable=False) as disk:
            sets = disk.state()
            active, inactive = disk.identity(sets.active), disk.identity(sets.inactive)
        if sets.next() is None:
            raise sm.CommandRefused("no partition set is bootable")
        return sm.from_disk(sets, _image(active), _image(inactive))

    # -- commands

    def start(self, command: str) -> None:
        """Validate and start `command` in the background (raises CommandRefused)."""
        if not self._lock.acquire(blocking=False):
            raise sm.Busy("An update command is in progress; try again when it finishes")
        try:
            if self._status is None:
                self._status = self._initial()
            sm.check_command(self._status, command)
            self._thread = threading.Thread(target=self._run, args=(command,),
                                            name=f"update-{command}", daemon=True)
            self._thread.start()
        except BaseException:
            self._lock.release()
            raise

    def run(self, command: str) -> sm.UpdateStatus:
        """Start `command` and wait for it (the automatic-update policy uses this)."""
        self.start(command)
        self.wait()
        return self._status  # type: ignore[return-value]

    def wait(self, timeout: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _run(self, command: str) -> None:
        status = self._status
        assert status is not None
        self.running = command
        try:
            if command in self.before:
                self.before[command](status)
            code, stdout, stderr = self._updog(command, status)
            result = sm.Command(command, "Success" if code == 0 else "Failed", self.clock(),
                                code, stderr)
            self._status = self._next(status, command, result, stdout)
        except Exception as e:  # record it: a failure must never be silent
            result = sm.Command(command, "Failed", self.clock(), 1,
                                f"{type(e).__name__}: {e}")
            self._status = self._next(status, command, result, "")
        finally:
            self.running = None
            self._lock.release()
        if self.on_done:
            self.on_done(self._status)

    def _updog(self, command: str, status: sm.UpdateStatus) -> tuple[int, str, str]:
        args = list(UPDOG[command])
        if command == "prepare" and status.chosen_update:  # the version refresh chose
            args += ["--image", status.chosen_update.version]
        if self.disk:
            args += ["--disk", self.disk]
        with tempfile.TemporaryDirectory(prefix="updog-progress-") as tmp:
            if command == "prepare":
                self._progress_file = Path(tmp) / "progress.json"
                args += ["--progress-file", str(self._progress_file)]
            deadline = self.deadlines[command]
            try:
                done = subprocess.run([*self.updog, *args], capture_output=True, text=True,
                                      errors="replace", timeout=deadline, check=False,
                                      preexec_fn=die_with_parent)  # no orphan holds the lock
            except subprocess.TimeoutExpired as e:
                tail = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) \
                    else (e.stderr or "")
                return 1, "", (f"updog {command} killed: past its deadline of {deadline:g} s"
                               f"{': ' + tail[-2000:] if tail else ''}")
            finally:
                self._progress_file = None
        code = done.returncode if done.returncode >= 0 else -done.returncode  # signal number
        return code, done.stdout, done.stderr

    def _next(self, status: sm.UpdateStatus, command: str, result: sm.Command,
              stdout: str) -> sm.UpdateStatus:
        if command == "refresh":
            updates, reason = [], None
            if result.cmd_status == "Success":
                try:
                    found = json.loads(stdout or "[]")
                    if isinstance(found, dict):  # --with-reason
                        updates, reason = found.get("updates") or [], found.get("reason")
                    else:
                        updates = found
                except json.JSONDecodeError as e:
                    result = sm.Command(command, "Failed", result.timestamp, result.exit_status,
                                        f"{result.stderr}\nunreadable updog output: {e}")
            running = status.active_partition.image if status.active_partition else None
            version = Version.parse(running.version) if running and running.version \
                else Version.parse("0.0.0")
            return sm.after_refresh(status, result, updates, version, self.version_lock(),
                                    reason=NoUpdate.from_json(reason) if reason else None)
        return {"prepare": sm.after_prepare, "activate": sm.after_activate,
                "deactivate": sm.after_deactivate}[command](status, result)


def _image(fields: dict[str, str] | None) -> sm.Image | None:
    if not fields:
        return None
    return sm.Image(fields.get("ARCH", ""), fields.get("VERSION_ID", ""),
                    fields.get("VARIANT_ID", ""))
