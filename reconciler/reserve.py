"""The store's reserve on the state disk: room SQLite keeps whatever else fills the disk.

A host container (without a quota), a log or an operator can fill the file system that holds
``store.db``. Then every write of the store fails, including the one that would disable the
container doing it. So:

* a ballast file ``<state-dir>/store-reserve`` of ``size`` bytes is allocated in full at start
  and again whenever the disk has room for it (``restore``): nothing else can take that space;
* an API write (``check``) while less than ``MARGIN`` is free beside the ballast is refused with
  507, naming the disk, what is free and the way out;
* except a write that only disables host containers (``host-containers.<name>.enabled =
  false``), which is always accepted: the ballast is released (deleted) first, so the store has
  room for it and for the pass that removes the container. Until ``restore`` allocates the
  ballast again (once space is back), ordinary writes count the released bytes as still held:
  they are refused rather than eat what the ballast gave back.

A disk too small for the ballast at start has no reserve (only the ``MARGIN`` check).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from hostcore.keys import flatten, split_key

DEFAULT_SIZE = 16 * 1024 * 1024  # bytes kept for the store (serve --store-reserve)
MARGIN = 2 * 1024 * 1024  # free bytes below which ordinary writes are refused


class ReserveExhausted(Exception):
    """A write would eat into the store's reserve: 507 Insufficient Storage."""

    status = 507


def only_disables_host_containers(patches: Iterable[Mapping[str, Any]]) -> bool:
    """True when every key the patches (PATCH bodies, inside ``settings``) set is
    ``host-containers.<name>.enabled`` = false."""
    keys = 0
    for patch in patches:
        for key, value in flatten(patch).items():
            parts = split_key(key)
            if not (len(parts) == 3 and parts[0] == "host-containers"
                    and parts[2] == "enabled" and value is False):
                return False
            keys += 1
    return keys > 0


class StoreReserve:
    def __init__(self, state_dir: Path, size: int = DEFAULT_SIZE) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / "store-reserve"
        self.size = size
        self._lock = threading.Lock()
        self._released = False  # released for a disabling write, not allocated again yet

    def free(self) -> int:
        stat = os.statvfs(self.state_dir)
        return stat.f_bavail * stat.f_frsize

    def held(self) -> int:
        try:
            return self.path.stat().st_blocks * 512
        except OSError:
            return 0

    def restore(self) -> bool:
        """Allocate the ballast when the disk has room for it and the margin; True if held."""
        if self.size <= 0:
            return False
        with self._lock:
            if self.held() >= self.size:
                return True
            if self.free() < self.size + 2 * MARGIN:
                return False
            try:
                with open(self.path, "wb") as f:
                    os.posix_fallocate(f.fileno(), 0, self.size)
                self._released = False
                return True
            except OSError:
                with contextlib.suppress(OSError):
                    self.path.unlink()
                return False

    def release(self) -> None:
        with self._lock:
            if self.held():
                self._released = True
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def short(self) -> bool:
        """True when an ordinary write now would eat into the reserve."""
        if self.size <= 0:
            return False
        owed = self.size - self.held() if self._released else 0
        return self.free() - owed < MARGIN

    def problem(self) -> str | None:
        """What status says while ordinary writes are refused (None when they are not)."""
        if not self.short():
            return None
        return (f"state disk full: {self.free()} bytes free on {self.state_dir} beside the "
                f"store's reserve of {self.size} bytes; writes are refused (507) except "
                "disabling host containers")

    def check(self, patches: Iterable[Mapping[str, Any]] | None) -> None:
        """Before an API write of ``patches`` (None: a write of unknown content)."""
        if not self.short():
            return
        if patches is not None and only_disables_host_containers(patches):
            self.release()  # disabling always works: the store gets the reserve for it
            return
        raise ReserveExhausted(
            f"The store's file system is full ({self.state_dir}: {self.free()} bytes free beside"
            f" the store's reserve of {self.size} bytes); nothing was changed. Disabling a host "
            "container (host-containers.<name>.enabled=false) is still accepted; free space "
            "and retry.")
