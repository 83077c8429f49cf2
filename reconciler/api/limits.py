"""What one client may hold of the API: idle time, header time, body time, connections.

Any socket user (every host container gets the socket) could otherwise open connections until
the daemon runs out of file descriptors: other clients time out and passes cannot open the files
they write. So:

* a connection idle for ``IDLE_TIMEOUT`` (nothing sent, a request line or headers never
  finished, a keep-alive connection after its last answer) is closed (aiohttp's keep-alive
  timer, which it arms at connect time as well);
* a body not received within ``BODY_TIMEOUT`` is answered 408 (``read_body``);
* a request answered before its body was read (a 413 past ``MAX_BODY``, a refusal) has its
  connection closed right after the answer: aiohttp's "lingering close" would otherwise read,
  parse and throw away up to 10 s of an endless chunked body at full speed
  (``lingering_time=0``). A body of declared length up to ``DRAIN_MAX`` is still read to its
  end first (``drain_unread``), so a client that sends its whole body before reading the
  answer (``http.client``, apiclient) sees the 413, not a broken pipe;
* at most ``MAX_CONNECTIONS`` are open. A new one past the cap closes the oldest *idle*
  connection to make room (whoever has a request to make gets served); when none is idle, the
  newcomer gets ``503`` at once. The cap sits well below the unit's ``LimitNOFILE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from reconciler.logs import get_logger, rate_limited

IDLE_TIMEOUT = 30.0  # seconds
BODY_TIMEOUT = 30.0  # seconds for a whole request body
MAX_CONNECTIONS = 512
NEW_FOR = 1.0  # seconds a handler made by the factory counts before it shows in connections
DRAIN_MAX = 8 * 1024 * 1024  # bytes of a declared-length body read past an early answer
BACKLOG = 1024  # connections the kernel queues before we accept them (a burst of clients)
log = get_logger("api")

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
         b"Content-Length: 57\r\n\r\nToo many connections to the API and none of them is idle\n")


def runner_options() -> dict[str, Any]:
    """Keyword arguments of ``web.AppRunner`` for the limits above."""
    return {"keepalive_timeout": IDLE_TIMEOUT, "lingering_time": 0}


async def read_body(request: web.Request) -> bytes:
    """The whole body, or 408 when it does not arrive within ``BODY_TIMEOUT``."""
    try:
        return await asyncio.wait_for(request.read(), BODY_TIMEOUT)
    except TimeoutError:
        raise web.HTTPRequestTimeout(
            text=f"Request body not received within {BODY_TIMEOUT:g} s"
        ) from None


@web.middleware
async def drain_unread(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Read the unread rest of a body of declared length (at most ``DRAIN_MAX``, within
    ``BODY_TIMEOUT``) before the answer goes out; a chunked or larger body is not read: its
    connection closes after the answer."""
    try:
        return await handler(request)
    finally:
        length = request.content_length
        if length is not None and length <= DRAIN_MAX and not request.content.at_eof():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(BODY_TIMEOUT):
                    while await request.content.readany():
                        pass


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(_BUSY)  # type: ignore[attr-defined]
        transport.close()


def _idle(handler: Any) -> bool:
    """A handler waiting for its next request (aiohttp's own test for its keep-alive close)."""
    waiter = getattr(handler, "_waiter", None)
    return waiter is not None and not waiter.done()


class CappedFactory:
    """The protocol factory of the API server, with the connection cap."""

    def __init__(self, server: web.Server, cap: int = MAX_CONNECTIONS):
        self.server = server
        self.cap = cap
        self._opened: dict[int, float] = {}  # id(handler) -> monotonic time opened
        self._new: list[Any] = []

    def __call__(self) -> asyncio.Protocol:
        connections = self.server.connections
        # handlers made but not connected yet (a burst of accepts comes before any of them)
        known = set(map(id, connections))
        now = time.monotonic()
        self._new = [
            h for h in self._new if id(h) not in known and now - self._opened[id(h)] < NEW_FOR
        ]
        if len(connections) + len(self._new) >= self.cap:
            idle = [h for h in connections if _idle(h)]
            if not idle:
                rate_limited(log, "api:cap", "API connection refused: at the cap, none idle",
                             cap=self.cap)
                return _Refuse()
            oldest = min(idle, key=lambda h: self._opened.get(id(h), 0.0))
            oldest.force_close()
            rate_limited(log, "api:evict", "API at its connection cap: closed the oldest idle",
                         cap=self.cap)
        handler = self.server()
        live = known | set(map(id, self._new))
        self._opened = {k: v for k, v in self._opened.items() if k in live}
        self._opened[id(handler)] = now
        self._new.append(handler)
        return handler


class CappedUnixSite(web.UnixSite):
    """``web.UnixSite`` whose connections go through ``CappedFactory``."""

    async def start(self) -> None:
        await web.BaseSite.start(self)
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        self._server = await loop.create_unix_server(
            CappedFactory(server), self._path, backlog=max(self._backlog, BACKLOG)
        )
