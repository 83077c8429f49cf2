"""One daemon per state dir: an exclusive ``flock`` on ``<state-dir>/daemon.lock``.

Two daemons on one state dir would both run the first-boot pipeline (the generated seed made
twice), the second would take the first one's socket, and stopping either would remove it. The
lock is taken before anything else touches the state dir and held for the life of the process
(the kernel drops it when the process dies, even by SIGKILL, so it is never stale). The file
holds the holder's pid, which the refusal names.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "daemon.lock"


class StateDirBusy(Exception):
    """Another process holds the state dir's lock; the message names it."""


class StateDirLock:
    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> StateDirLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StateDirBusy(
                f"{self.path.parent} is in use by another daemon (pid {holder}, lock "
                f"{self.path}); one daemon per state dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid is for the message; a full disk is no error
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
