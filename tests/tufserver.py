"""An HTTP server on 127.0.0.1 for a directory (a TUF repository): it records the paths asked
for and can stream endless data for some (the ``serve`` fixture of tests/conftest.py)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, records request paths, can stream endless data for some paths."""

    seen: list[str]
    endless: set[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.seen.append(self.path)
        if self.path.split("?")[0] in self.endless:
            self.send_response(200)
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b" " * 65536)
            except (BrokenPipeError, ConnectionResetError):
                return
        super().do_GET()


@dataclass
class Server:
    base_url: str
    seen: list[str]
    endless: set[str]


def http_server(directory: Path) -> tuple[Server, http.server.ThreadingHTTPServer]:
    """A static HTTP server for ``directory`` on 127.0.0.1, on a thread of its own; the caller
    shuts the returned server down."""
    seen: list[str] = []
    endless: set[str] = set()
    handler = type("H", (_Handler,), {"seen": seen, "endless": endless})
    srv = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(directory))
    )
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    return Server(f"http://127.0.0.1:{srv.server_address[1]}", seen, endless), srv


def serving() -> Iterator:
    """``start(directory) -> Server`` for as long as the generator runs (the fixture's body)."""
    servers = []

    def start(directory: Path) -> Server:
        server, srv = http_server(directory)
        servers.append(srv)
        return server

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()
