"""The subprocess runner: run argv without a shell, bounded in time and in output kept.

Behind the small ``CommandRunner`` interface so the pass and the crash tests can give it another
runner; ``SubprocessRunner`` is the one real implementation. A command never raises: it returns a
``CommandResult`` saying how it went (exit status, output tail, or why it could not run).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
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


class SubprocessRunner:
    """Runs argv without a shell, in its own process group so a timeout kills the whole tree."""

    def __init__(self, output_limit: int = OUTPUT_TAIL_BYTES) -> None:
        self.output_limit = output_limit

    def run(self, argv: Sequence[str], env: Mapping[str, str], timeout: float) -> CommandResult:
        args = tuple(argv)
        start = time.monotonic()
        if not args:
            return CommandResult(args, None, "", 0.0, "empty command")
        try:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            reason = "not found" if exc.errno == errno.ENOENT else exc.strerror or str(exc)
            return CommandResult(
                args, None, "", time.monotonic() - start, f"cannot run {args[0]}: {reason}"
            )
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
        return CommandResult(
            args, process.returncode, _tail(output, self.output_limit), time.monotonic() - start
        )
