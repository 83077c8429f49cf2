"""Durable file replacement: the one implementation every writer of state files uses.

A file is written to a temporary file in its own directory, fsynced, renamed over the old one,
and the directory is fsynced: after a crash or a power cut the path holds the old bytes or the
new ones, never a mix, and the rename itself is not lost.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make the entries of ``path`` (new, renamed or removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Put ``data`` at ``path`` all or nothing, durably (``mode`` set before the rename)."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)
