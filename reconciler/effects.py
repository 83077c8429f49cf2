"""The thin imperative shell for configuration files: read what is there, write atomically.

Why so careful: a crash must never leave a half-written configuration file (temp file in the same
directory, fsync, rename, fsync the directory), and nothing may be written outside ``--root``
even through a symlinked parent directory.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
import secrets
import stat
from collections.abc import Iterable
from pathlib import Path

from hostcore import faults
from hostcore.durable import fsync_directory
from reconciler.plan import ObservedFile


class PathEscapeError(ValueError):
    """A configuration path is not a clean absolute path, or resolves outside the root."""


def _relative(path: str) -> str:
    """``/etc/motd`` -> ``etc/motd``; refuse relative paths, '..', '.' and empty segments."""
    if not path.startswith("/") or "\x00" in path:
        raise PathEscapeError(f"{path!r} is not an absolute path")
    parts = path.split("/")[1:]
    if not parts or any(p in ("", ".", "..") for p in parts):
        raise PathEscapeError(f"{path!r} is not a normalized path without '..'")
    return "/".join(parts)


def _inside(real_root: str, candidate: str) -> bool:
    return candidate == real_root or candidate.startswith(real_root.rstrip("/") + "/")


def _realpath(path: str) -> str:
    """``os.path.realpath`` of a directory, asked of the kernel when it exists: one ``open``
    (O_PATH) and one ``readlink`` of its ``/proc/self/fd`` entry, where ``realpath`` is an
    ``lstat`` per component in Python (a pass resolves every configuration file's parent)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # absent, not a directory, a symlink loop: the lexical answer
        return os.path.realpath(path)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc
        real = ""
    finally:
        os.close(fd)
    if not real.startswith("/") or real.endswith(" (deleted)"):
        return os.path.realpath(path)
    return real


def resolve_parent(root: Path, path: str) -> tuple[str, str]:
    """The real directory that will hold ``path`` under ``root``, and the file's name.

    Symlinks in the parent chain are followed and must stay inside the root. The final component
    itself is never followed: writes replace it and reads refuse it (O_NOFOLLOW).
    """
    return _resolve(_realpath(os.fspath(root)), path, {})


def _resolve(real_root: str, path: str, cache: dict[str, str]) -> tuple[str, str]:
    parent_rel, _, name = _relative(path).rpartition("/")
    parent = cache.get(parent_rel)
    if parent is None:
        parent = cache[parent_rel] = _realpath(os.path.join(real_root, parent_rel))
    if not _inside(real_root, parent):
        raise PathEscapeError(f"{path} resolves to {parent}, outside the root {real_root}")
    return parent, name


def _read_regular(parent: str, name: str) -> ObservedFile | None:
    try:
        fd = os.open(  # O_NONBLOCK: a FIFO planted at the path must not hang the pass
            os.path.join(parent, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        )
    except OSError:
        return None  # absent, a symlink (ELOOP), unreadable: in every case, (re)write it
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None
        chunks = []
        while chunk := os.read(fd, max(info.st_size, 65536)):
            chunks.append(chunk)
        return ObservedFile(b"".join(chunks), stat.S_IMODE(info.st_mode))
    finally:
        os.close(fd)


def read_observed(root: Path, paths: Iterable[str]) -> dict[str, ObservedFile | None]:
    """What is at each path under ``root``: a regular file's bytes and mode, else None.

    Never raises for one path: a path that escapes the root reads as None, so the planned write
    reports the escape for that file alone.
    """
    observed: dict[str, ObservedFile | None] = {}
    real_root = _realpath(os.fspath(root))
    parents: dict[str, str] = {}
    for path in paths:
        try:
            parent, name = _resolve(real_root, path, parents)
        except PathEscapeError:
            observed[path] = None
            continue
        observed[path] = _read_regular(parent, name)
    return observed


def _makedirs(root: Path, path: str) -> None:
    """Create missing parents one level at a time, re-checking the root after each."""
    relative = _relative(path)
    os.makedirs(root, 0o755, exist_ok=True)  # the root itself is trusted configuration
    parts = relative.split("/")[:-1]
    for depth in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:depth])
        directory, name = resolve_parent(root, prefix)
        with contextlib.suppress(FileExistsError):
            os.mkdir(os.path.join(directory, name), 0o755)
            fsync_directory(directory)  # the new entry is durable before a file goes in it
        resolve_parent(root, prefix + "/x")  # the directory itself (or its link) stays inside


def write_atomic(root: Path, path: str, content: bytes, mode: int) -> None:
    """Replace ``root``+``path`` with ``content`` and ``mode``, all or nothing, durably."""
    _makedirs(root, path)
    parent, name = resolve_parent(root, path)
    dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for stale in fnmatch.filter(os.listdir(dir_fd), f".{glob.escape(name)}.tmp-*"):
            with contextlib.suppress(OSError):  # left by a writer killed before its rename
                os.unlink(stale, dir_fd=dir_fd)
        temp = f".{name}.tmp-{secrets.token_hex(6)}"
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
            dir_fd=dir_fd,
        )
        try:
            try:
                view = memoryview(content)
                while view:
                    view = view[os.write(fd, view):]
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            faults.point(f"before-rename:{path}")
            os.replace(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
            raise
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
