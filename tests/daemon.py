"""A real daemon in a subprocess, and a small HTTP-over-Unix-socket client for tests."""

from __future__ import annotations

import http.client
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float = 30.0):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # A blocking connect waits for room in the listen backlog (with a timeout set, a Unix
        # socket fails at once with EAGAIN when a burst of clients filled it).
        self.sock.connect(self.socket_path)
        self.sock.settimeout(self.timeout)


class Daemon:
    def __init__(
        self, state_dir: Path, args: Sequence[str] = (), env: dict[str, str] | None = None,
        nofile: int | None = None, wait: bool = True, log_level: str | None = None,
        cwd: Path = REPO,
    ):
        self.state_dir = state_dir
        self.socket = state_dir / "api.sock"
        self.root = state_dir / "root"
        self.log = open(state_dir.parent / f"{state_dir.name}.log", "wb")  # noqa: SIM115
        levels = ["--log-level", log_level] if log_level else []
        command = [sys.executable, "-m", "reconciler.cli", *levels, "serve", "--state-dir",
                   str(state_dir), *args]
        limit = None if nofile is None else (
            lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        # ``cwd``: the tree whose code runs (``-m`` imports from it first; bench_api runs an
        # older checkout's daemon beside this one)
        self.process = subprocess.Popen(command, cwd=cwd, stdout=self.log, stderr=self.log,
                                        env={**os.environ, **(env or {})}, preexec_fn=limit)
        if wait:
            try:
                self.wait_ready()
            except BaseException:  # never leave a daemon behind that nobody will stop
                self.stop()
                raise

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"daemon exited {self.process.returncode}: {self.logs()}")
            try:
                if self.request("GET", "/os")[0] == 200:
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"daemon not ready: {self.logs()}")

    def logs(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return (self.state_dir.parent / f"{self.state_dir.name}.log").read_text(errors="replace")

    def request(self, method: str, path: str, body: Any = None,
                raw: bytes | None = None) -> tuple[int, Any]:
        connection = UnixHTTPConnection(self.socket)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            connection.request(method, path, body=data,
                               headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            payload = response.read()
            kind = response.getheader("Content-Type", "")
            if payload and kind.startswith("application/json"):
                return response.status, json.loads(payload)
            return response.status, payload.decode()
        finally:
            connection.close()

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.request(method, path, body)
        assert 200 <= status < 300, f"{method} {path} -> {status}: {payload}"
        return payload

    def apiclient(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """``apiclient ARGS`` as a child process against this daemon's socket."""
        return subprocess.run(
            [sys.executable, "-m", "reconciler.apiclient", *args],
            cwd=REPO,
            env={**os.environ, "APICLIENT_SOCKET": str(self.socket)},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        return self.process.returncode


def cli(*args: str | Path, cwd: Path = REPO,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m reconciler.cli ARGS``, output captured, exit status not checked."""
    return subprocess.run([sys.executable, "-m", "reconciler.cli", *map(str, args)], cwd=cwd,
                          env=env, capture_output=True, text=True, check=False)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """The stdout of a command that must have succeeded (its output otherwise)."""
    assert result.returncode == 0, (
        f"{result.args} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll ``check`` until it returns something truthy; no fixed sleeps in tests."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
