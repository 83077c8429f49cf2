"""A minimal HTTP/1.1 client over a Unix socket, for apiclient's start-up time.

``http.client`` imports ``email.parser`` (and through it ``re``, ``calendar``, ``datetime``,
``random``, ``urllib``...) only to parse response headers: about a third of a second on a loaded
machine, several times the cost of starting the interpreter. apiclient needs far less: one
request line, a few headers, and a body framed by ``Content-Length``, by chunked transfer coding
or by the end of the connection. This module does exactly that, with the standard library's
``socket`` alone, and keeps the connection alive between requests like ``http.client`` does.

Standard library only, and no import beyond ``_socket``: the ``socket`` module around it costs
more than the rest of this exchange (it builds four enums from its constants when imported) and
adds nothing a blocking Unix-socket client needs. apiclient ships it in its zipapp
(``reconciler/containers/executor.py``).
"""

from __future__ import annotations

import _socket

MAX_LINE = 65536  # a status or header line longer than this is not an answer from our API
MAX_HEADERS = 100


class ProtocolError(OSError):
    """The peer's answer is not well-formed HTTP/1.1 (or it ended in the middle)."""


class RemoteDisconnected(ConnectionResetError, ProtocolError):
    """The server closed the connection without answering (e.g. an idle kept-alive one)."""


class Response:
    """One complete answer: status, reason, headers (names lower-cased) and the whole body."""

    def __init__(self, status: int, reason: str, headers: dict[str, str], body: bytes,
                 will_close: bool):
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.will_close = will_close

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


class UnixHTTPConnection:
    """HTTP/1.1 to ``localhost`` through the Unix socket at ``path``, one request at a time."""

    def __init__(self, path: str, timeout: float | None = None):
        self.path = path
        self.timeout = timeout
        self._sock: _socket.socket | None = None
        self._file: _Reader | None = None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> None:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._file = _Reader(sock)

    def close(self) -> None:
        self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def request(self, method: str, target: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Response:
        """Send one request and read its whole answer; closes the socket when the server will."""
        if any(c in target for c in " \r\n") or any(c in method for c in " \r\n"):
            raise ValueError(f"invalid request target or method: {method!r} {target!r}")
        if self._sock is None:
            self.connect()
        lines = [f"{method} {target} HTTP/1.1", "Host: localhost"]
        for name, value in (headers or {}).items():
            if any(c in name + value for c in "\r\n"):
                raise ValueError(f"invalid header {name!r}")
            lines.append(f"{name}: {value}")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        assert self._sock is not None
        self._sock.sendall(head + (body or b""))
        try:
            response = self._read_response(method)
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return response

    # ---- reading the answer ---------------------------------------------------------------

    def _line(self) -> bytes:
        assert self._file is not None
        line = self._file.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise ProtocolError("header line too long")
        return line

    def _read_response(self, method: str) -> Response:
        while True:
            status_line = self._line()
            if not status_line:
                raise RemoteDisconnected("the server closed the connection without an answer")
            version, status, reason = _parse_status_line(status_line)
            headers = self._read_headers()
            if not 100 <= status < 200:
                break  # skip interim answers (100 Continue)
        connection = headers.get("connection", "").lower()
        will_close = "close" in connection or (
            version == "HTTP/1.0" and "keep-alive" not in connection
        )
        if method == "HEAD" or status in (204, 304):
            return Response(status, reason, headers, b"", will_close)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._read_chunked()
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise ProtocolError(f"invalid Content-Length {length!r}")
            body = self._read_exactly(int(length))
        else:
            assert self._file is not None
            body = self._file.read()  # framed by the end of the connection
            will_close = True
        return Response(status, reason, headers, body, will_close)

    def _read_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        for _ in range(MAX_HEADERS + 1):
            line = self._line()
            if line in (b"\r\n", b"\n"):
                return headers
            if not line:
                raise ProtocolError("the connection ended inside the headers")
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name or name != name.strip():
                raise ProtocolError(f"malformed header line {line[:80]!r}")
            key = name.lower()
            value = value.strip()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        raise ProtocolError(f"more than {MAX_HEADERS} headers")

    def _read_exactly(self, length: int) -> bytes:
        assert self._file is not None
        data = self._file.read(length)
        if len(data) != length:
            raise ProtocolError(f"the body ended after {len(data)} of {length} bytes")
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            line = self._line()
            if not line:
                raise ProtocolError("the connection ended inside a chunked body")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise ProtocolError(f"invalid chunk size {size_text[:20]!r}") from None
            if size < 0:
                raise ProtocolError(f"invalid chunk size {size_text[:20]!r}")
            if size == 0:
                self._read_headers()  # trailers, then the blank line
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            if self._line() not in (b"\r\n", b"\n"):
                raise ProtocolError("a chunk is not followed by CRLF")


class _Reader:
    """Buffered reads off a socket: lines, exact lengths, or everything up to the end."""

    CHUNK = 65536

    def __init__(self, sock: _socket.socket):
        self._sock = sock
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        data = self._sock.recv(self.CHUNK)
        if not data:
            self._eof = True
            return False
        self._buffer += data
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def readline(self, limit: int) -> bytes:
        """Up to and including the next LF; at most ``limit`` bytes; b"" at the end."""
        start = 0
        while True:
            end = self._buffer.find(b"\n", start)
            if end >= 0:
                return self._take(min(end + 1, limit))
            if len(self._buffer) >= limit:
                return self._take(limit)
            start = len(self._buffer)
            if not self._fill():
                return self._take(len(self._buffer))

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes unless the stream ends first; ``-1``: up to the end."""
        while (size < 0 or len(self._buffer) < size) and self._fill():
            pass
        return self._take(len(self._buffer) if size < 0 else size)


def _parse_status_line(line: bytes) -> tuple[str, int, str]:
    text = line.decode("latin-1").rstrip("\r\n")
    version, _, rest = text.partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/1.") or len(code) != 3 or not code.isdigit():
        raise ProtocolError(f"not an HTTP/1.x status line: {text[:80]!r}")
    return version, int(code), reason
