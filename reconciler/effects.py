"""The thin imperative shell for files and commands: read what is there, write atomically, run.

Why so careful: a crash must never leave a half-written configuration file (temp file in the same
directory, fsync, rename, fsync the directory), and nothing may be written outside ``--root``
even through a symlinked parent directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fnmatch
import glob
import os
import secrets
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reconciler import faults
from reconciler.durable import fsync_directory
from reconciler.plan import ObservedFile

OUTPUT_TAIL_BYTES = 4096


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


def resolve_parent(root: Path, path: str) -> tuple[str, str]:
    """The real directory that will hold ``path`` under ``root``, and the file's name.

    Symlinks in the parent chain are followed and must stay inside the root. The final component
    itself is never followed: writes replace it and reads refuse it (O_NOFOLLOW).
    """
    return _resolve(os.path.realpath(root), path, {})


def _resolve(real_root: str, path: str, cache: dict[str, str]) -> tuple[str, str]:
    parent_rel, _, name = _relative(path).rpartition("/")
    parent = cache.get(parent_rel)
    if parent is None:
        parent = cache[parent_rel] = os.path.realpath(os.path.join(real_root, parent_rel))
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
    real_root = os.path.realpath(root)
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


# --- commands -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommandResult:
    """How one command went; ``error`` is set when it could not run or was killed on timeout."""

    argv: tuple[str, ...]
    returncode: int | None
    output: str
    duration: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.returncode == 0


class CommandRunner(Protocol):
    def run(
        self, argv: Sequence[str], env: Mapping[str, str], timeout: float
    ) -> CommandResult: ...


def _tail(data: bytes | None, limit: int) -> str:
    data = data or b""
    if len(data) > limit:
        data = b"..." + data[-limit:]
    return data.decode("utf-8", errors="replace")


_PR_SET_PDEATHSIG = 1
try:
    _LIBC: ctypes.CDLL | None = ctypes.CDLL(None, use_errno=True)
except OSError:  # not Linux: no parent-death signal, the process group still goes on timeout
    _LIBC = None


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the daemon dies, even by SIGKILL, so no
    orphan (a ``git fetch`` holding our checkout's locks, an ``updog`` holding the update
    cache's) outlives the process that would have waited for it."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class SubprocessRunner:
    """Runs argv without a shell, in its own process group so a timeout kills the whole tree.

    Children die with the daemon (``die_with_parent``); ``cancel()`` kills every command
    running now (shutdown does not wait for a hanging fetch)."""

    def __init__(self, output_limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.output_limit = output_limit
        self._running: set[subprocess.Popen[bytes]] = set()
        self._running_lock = threading.Lock()
        self.cancelled = False

    def cancel(self) -> None:
        """Kill what runs now and refuse to start anything more (shutdown)."""
        with self._running_lock:
            self.cancelled = True
            running = list(self._running)
        for process in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)

    def run(self, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> CommandResult:
        args = tuple(argv)
        start = time.monotonic()
        if not args:
            return CommandResult(args, None, "", 0.0, "empty command")
        if self.cancelled:
            return CommandResult(args, None, "", 0.0, "cancelled: the daemon is stopping")
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                close_fds=True,
                preexec_fn=die_with_parent,  # noqa: PLW1509 - prctl only, async-signal-safe
            )
        except OSError as exc:
            reason = "not found" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
            return CommandResult(
                args, None, "", time.monotonic() - start, f"cannot run {args[0]}: {reason}"
            )
        with self._running_lock:
            self._running.add(process)
        try:
            return self._wait(process, args, start, timeout)
        finally:
            with self._running_lock:
                self._running.discard(process)

    def _wait(
        self, process: subprocess.Popen[bytes], args: tuple[str, ...], start: float,
        timeout: float,
    ) -> CommandResult:
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            try:
                output, _ = process.communicate(timeout=5)
            except subprocess.TimeoutExpired:  # a descendant escaped the group and holds the pipe
                process.kill()
                output = b""
                process.wait()
            return CommandResult(
                args, process.returncode, _tail(output, self.output_limit),
                time.monotonic() - start, f"timed out after {timeout:g}s and was killed",
            )
        if self.cancelled and process.returncode == -signal.SIGKILL:
            return CommandResult(args, process.returncode, _tail(output, self.output_limit),
                                 time.monotonic() - start, "cancelled: the daemon is stopping")
        return CommandResult(
            args, process.returncode, _tail(output, self.output_limit), time.monotonic() - start
        )
