"""The subprocess runner: run argv without a shell, bounded in time and in output kept.

Behind the small ``CommandRunner`` interface so the pass and the crash tests can give it another
runner; ``SubprocessRunner`` is the one real implementation. A command never raises: it returns a
``CommandResult`` saying how it went (exit status, output tail, or why it could not run).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

OUTPUT_TAIL_BYTES = 4096


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
        except ValueError as exc:  # a NUL byte in an argument or the environment
            return CommandResult(
                args, None, "", time.monotonic() - start, f"cannot run {args[0]!r}: {exc}"
            )
        except OSError as exc:
            reason = "not found" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
            return CommandResult(
                args, None, "", time.monotonic() - start, f"cannot run {args[0]}: {reason}"
            )
        with self._running_lock:
            self._running.add(process)
            cancelled = self.cancelled  # cancel() may have run while it was being started
        if cancelled:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
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
