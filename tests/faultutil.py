"""Real faults for tests: a small file system that fills up, a held SQLite write lock, a TCP
remote that accepts and never answers, a git remote that stalls mid-pack, an HTTP server that
drips its files one byte at a time."""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import sqlite3
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def small_fs(where: Path, size: str = "24m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (the tests run as root), unmounted after."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """Fill ``directory``'s file system up to ``leave`` free bytes with one file; returns it.

    Unbuffered: a write the disk refuses fails here, where it is expected, and no buffered
    remainder is left for the close to flush (and fail on)."""
    filler = directory / "filler"
    with open(filler, "ab", buffering=0) as f:
        while (free := free_bytes(directory)) > leave:
            try:
                f.write(b"\0" * min(1 << 20, max(4096, free - leave)))
            except OSError:
                break
    return filler


def free_bytes(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


@contextlib.contextmanager
def store_locked(path: Path) -> Iterator[None]:
    """Another process's write transaction on the store for the duration (the daemon's writes
    fail with 'database is locked' after SQLite's busy timeout)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        db.execute("ROLLBACK")
        db.close()


class AcceptLoop:
    """A listening socket's accept loop on a thread of its own: each connection is kept (closed
    by ``close``) and handed to ``handle``.

    ``close`` shuts the socket down first, which ends an ``accept`` blocked in the kernel, joins
    the thread, and only then closes the socket. Closed under a blocked ``accept``, its file
    descriptor number would be free for the next socket the test process opens, and the loop,
    still running, could accept that socket's connections: a later test's repository server
    was answered once by an earlier test's misbehaving daemon."""

    def __init__(self, sock: socket.socket,
                 handle: Callable[[socket.socket], None] = lambda conn: None) -> None:
        self.sock = sock
        self.held: list[socket.socket] = []
        self._handle = handle
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self._handle(conn)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), "the accept loop did not end"
        self.sock.close()
        for conn in self.held:
            with contextlib.suppress(OSError):
                conn.close()


def tcp_listener(backlog: int = 64) -> socket.socket:
    """A TCP socket listening on 127.0.0.1, on a port of the kernel's choice."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


class Blackhole(AcceptLoop):
    """A TCP listener on 127.0.0.1 that accepts connections and never answers."""

    def __init__(self) -> None:
        super().__init__(tcp_listener())
        self.port = self.sock.getsockname()[1]


class StallingGitRemote:
    """``git daemon`` behind a proxy on 127.0.0.1 that forwards at most ``budget`` bytes of the
    server's answer, then holds the connection until ``release()``: a fetch stuck mid-pack."""

    def __init__(self, base: Path, budget: int = 64 * 1024):
        self.base = base
        self.budget = budget
        self.released = threading.Event()
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.daemon_port = probe.getsockname()[1]
        probe.close()
        self.daemon = subprocess.Popen(
            ["git", "daemon", "--export-all", "--reuseaddr", "--listen=127.0.0.1",
             f"--port={self.daemon_port}", f"--base-path={base}", str(base)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._conns: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._loop = AcceptLoop(tcp_listener(16), self._proxy)
        self.port = self._loop.sock.getsockname()[1]

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def release(self) -> None:
        self.released.set()

    def _proxy(self, client: socket.socket) -> None:
        self._start(self._serve, client)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _serve(self, client: socket.socket) -> None:
        for _ in range(100):
            try:
                server = socket.create_connection(("127.0.0.1", self.daemon_port))
                break
            except OSError:
                threading.Event().wait(0.05)
        else:
            client.close()
            return
        self._conns += [client, server]
        self._start(self._pump, client, server, None)
        self._pump(server, client, self.budget)

    def _pump(self, source: socket.socket, sink: socket.socket, budget: int | None) -> None:
        sent = 0
        try:
            while True:
                data = source.recv(16384)
                if not data:
                    break
                if budget is not None and not self.released.is_set():
                    room = budget - sent
                    if room <= 0:
                        self.released.wait()
                    else:
                        data, rest = data[:room], data[room:]
                        sink.sendall(data)
                        sent += len(data)
                        if rest:
                            self.released.wait()
                            sink.sendall(rest)
                        continue
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """As ``AcceptLoop.close``: no thread may outlive the sockets it reads (shut down
        first, which ends a blocked ``recv``, then joined, then closed)."""
        self.released.set()
        self._loop.close()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(timeout=30)
            assert not thread.is_alive(), "a proxy thread did not end"
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.close()
        self.daemon.terminate()
        self.daemon.wait(timeout=10)


class DripServer:
    """HTTP on 127.0.0.1 serving ``directory``'s files with their true Content-Length, one byte
    every ``interval`` seconds (each read keeps within any socket timeout; only an overall
    deadline ends the download). ``open`` counts requests still being dripped to."""

    def __init__(self, directory: Path, interval: float = 0.5):
        self.directory, self.interval = Path(directory), interval
        self.requests: list[str] = []
        self.open = 0
        self._stop = threading.Event()
        drip = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_GET(self) -> None:  # noqa: N802
                drip.requests.append(self.path)
                path = drip.directory / self.path.split("?")[0].lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                drip.open += 1
                try:
                    for i in range(len(data)):
                        self.wfile.write(data[i:i + 1])
                        self.wfile.flush()
                        if drip._stop.wait(drip.interval):
                            return
                except OSError:
                    return
                finally:
                    drip.open -= 1

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
