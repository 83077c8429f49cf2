"""apiclient's transport error paths, against real Unix sockets that misbehave on purpose.

A missing socket, a daemon that closes the connection in the middle of its answer, an answer
that is not HTTP, a body that is not JSON where JSON is expected, a daemon that never answers:
each is one clear line on stderr naming the socket, a non-zero exit, and no traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faultutil import AcceptLoop

Answer = Callable[[socket.socket], None]


class MisbehavingDaemon:
    """Accepts on a Unix socket, reads one request head, then does ``answer`` with the
    connection (which is closed after, unless ``answer`` keeps it open)."""

    def __init__(self, path: Path, answer: Answer):
        self.path = path
        self.answer = answer
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(path))
        listener.listen(8)
        self._loop = AcceptLoop(listener, self._serve)

    def _serve(self, conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
        self.answer(conn)

    def close(self) -> None:
        self._loop.close()


def closes_mid_answer(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 100\r\n\r\n{\"settings\": {\"mo")
    conn.close()


def not_http(conn: socket.socket) -> None:
    conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
    conn.close()


def not_json(conn: socket.socket) -> None:
    body = b"<html>502 Bad Gateway</html>"
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    conn.close()


def never_answers(conn: socket.socket) -> None:
    pass  # held open, silent


@pytest.fixture
def misbehaving(tmp_path: Path) -> Iterator[Callable[[Answer], Path]]:
    started: list[MisbehavingDaemon] = []

    def start(answer: Answer) -> Path:
        daemon = MisbehavingDaemon(tmp_path / f"api-{len(started)}.sock", answer)
        started.append(daemon)
        return daemon.path

    yield start
    for daemon in started:
        daemon.close()


def apiclient(sock: Path, *args: str, timeout: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "APICLIENT_SOCKET"}
    if timeout is not None:
        env["APICLIENT_TIMEOUT"] = timeout
    return subprocess.run([sys.executable, "-m", "reconciler.apiclient", "-s", str(sock), *args],
                          capture_output=True, text=True, timeout=60, env=env)


def one_clear_line(result: subprocess.CompletedProcess, *words: str) -> str:
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n"), result.stderr
    for word in words:
        assert word in result.stderr, result.stderr
    return result.stderr


def test_socket_missing(tmp_path: Path) -> None:
    line = one_clear_line(apiclient(tmp_path / "nowhere.sock", "get", "settings.motd"),
                          "nowhere.sock", "No such file")
    assert line.startswith("Failed to connect to API socket")


def test_socket_nobody_listens_on(tmp_path: Path) -> None:
    stale = tmp_path / "stale.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(stale))
    listener.close()  # the file stays, nobody accepts: a daemon that died
    one_clear_line(apiclient(stale, "get", "settings.motd"), "stale.sock", "refused")


def test_daemon_closes_mid_answer(misbehaving) -> None:
    sock = misbehaving(closes_mid_answer)
    one_clear_line(apiclient(sock, "get", "settings.motd"), sock.name,
                   "ended after 17 of 100 bytes")


def test_answer_that_is_not_http(misbehaving) -> None:
    sock = misbehaving(not_http)
    one_clear_line(apiclient(sock, "get", "settings.motd"), sock.name, "not an HTTP/1.x status")


def test_answer_that_is_not_json(misbehaving) -> None:
    sock = misbehaving(not_json)
    one_clear_line(apiclient(sock, "get", "settings.motd"), sock.name,
                   "the answer is not JSON (text/html)")


def test_daemon_that_never_answers_times_out(misbehaving) -> None:
    sock = misbehaving(never_answers)
    one_clear_line(apiclient(sock, "get", "settings.motd", timeout="1"), sock.name, "timed out")
