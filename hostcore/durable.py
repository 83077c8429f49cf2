"""Durable file replacement: the one implementation every writer of state files uses.

A file is written to a temporary file in its own directory, fsynced, renamed over the old one,
and the directory is fsynced: after a crash or a power cut the path holds the old bytes or the
new ones, never a mix, and the rename itself is not lost.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_directory(path: str | os.PathLike[str]) -> None:
    """Make the entries of ``path`` (new, renamed or removed files) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rename_over(temporary: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Put a finished file ``temporary`` (in ``path``'s directory) at ``path``, durably: its
    bytes are fsynced before the rename, and the directory after it."""
    fd = os.open(temporary, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    fsync_directory(Path(path).parent)


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str], mode: int | None = None) -> Iterator[BinaryIO]:
    """A file to write whose bytes replace ``path`` durably when the block ends without error.

    An error inside the block leaves ``path`` as it was (the temporary file is removed), which
    lets a caller stream into it and verify before anything appears (a download, say).
    """
    path = Path(path)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            if mode is not None:
                os.fchmod(handle.fileno(), mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)


def replace_file(path: str | os.PathLike[str], data: bytes, mode: int | None = None) -> None:
    """Put ``data`` at ``path`` all or nothing, durably (``mode`` set before the rename)."""
    with replacing(path, mode) as handle:
        handle.write(data)
