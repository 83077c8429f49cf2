"""Is a rollback available? The set the running one would fall back to, re-checked periodically.

`RollbackWatch` runs `setcheck.check_set` on the inactive set (its headers, sizes and verity tree,
read back off the disk) at most every `every`, in a thread of its own, and reports the result as
the `RollbackAvailable` condition of `GET /status`. A rollback needs both a bootable set and
flags that let `signpost rollback-to-inactive` select it (tries left, or booted successfully).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from updates.partitions import open_os_disk
from updates.setcheck import check_set
from updates.timefmt import format_time, utcnow

EVERY = timedelta(minutes=10)


def check_rollback(disk: str | None) -> tuple[bool, str]:
    """(available, why) for the disk's inactive set."""
    with open_os_disk(disk, writable=False) as d:
        sets = d.state()
        inactive = sets.inactive
        flags = sets.get(inactive)
        if not flags.will_boot():
            return False, (f"set {inactive} is not bootable by its flags ({flags.describe()})")
        report = check_set(d, inactive)
    return True, f"set {inactive} holds {report.version} and passed its verity check"


class RollbackWatch:
    def __init__(self, disk: str | None, every: timedelta = EVERY,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.disk, self.every, self.clock = disk, every, clock
        self.result: dict[str, Any] | None = None
        self._thread: threading.Thread | None = None

    def due(self) -> bool:
        if self._thread is not None and self._thread.is_alive():
            return False
        if self.result is None:
            return True
        return self.clock() >= self.result["checked"] + self.every

    def maybe_start(self) -> None:
        if self.due():
            self._thread = threading.Thread(target=self.check, name="rollback-check",
                                            daemon=True)
            self._thread.start()

    def check(self) -> dict[str, Any]:
        try:
            ok, why = check_rollback(self.disk)
        except Exception as e:  # reported in the condition, retried at the next due time
            ok, why = False, f"{type(e).__name__}: {e}"
        self.result = {"ok": ok, "reason": why, "checked": self.clock()}
        return self.result

    def condition(self) -> dict[str, Any]:
        if self.result is None:
            return {"type": "RollbackAvailable", "status": None, "reason": "not checked yet"}
        return {"type": "RollbackAvailable", "status": self.result["ok"],
                "reason": self.result["reason"],
                "checked_at": format_time(self.result["checked"])}
