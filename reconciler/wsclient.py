"""A small WebSocket client (RFC 6455) over a Unix socket, standard library only.

Just what ``apiclient exec`` needs: the opening handshake, masked client frames, text and
binary messages (fragmented ones reassembled), ping/pong and close. Kept out of apiclient's
import path until ``exec`` is used, so the other subcommands start as fast as before.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 64 * 1024 * 1024


class WebSocketError(Exception):
    """The handshake was refused or the peer broke the protocol."""

    def __init__(self, message: str, status: int = 0, body: str = ""):
        super().__init__(message)
        self.status, self.body = status, body


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def encode_frame(opcode: int, payload: bytes, mask: bool = True, fin: bool = True) -> bytes:
    """One frame; clients must mask (RFC 6455 5.3)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    length = len(payload)
    bit = 0x80 if mask else 0
    if length < 126:
        head.append(bit | length)
    elif length < 1 << 16:
        head.append(bit | 126)
        head += struct.pack("!H", length)
    else:
        head.append(bit | 127)
        head += struct.pack("!Q", length)
    if not mask:
        return bytes(head) + payload
    key = os.urandom(4)
    return bytes(head) + key + _mask(payload, key)


def _mask(payload: bytes, key: bytes) -> bytes:
    if not payload:
        return b""
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )


class WebSocket:
    def __init__(self, sock: socket.socket, buffered: bytes = b""):
        self.sock = sock
        self._buffer = bytearray(buffered)
        self._send_lock = threading.Lock()
        self.closed = False

    # ---- sending (any thread) ----

    def send(self, opcode: int, payload: bytes) -> None:
        frame = encode_frame(opcode, payload)
        with self._send_lock:
            if self.closed and opcode != CLOSE:
                raise WebSocketError("the connection is closed")
            self.sock.sendall(frame)

    def send_text(self, text: str) -> None:
        self.send(TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self.send(BINARY, data)

    def close(self, code: int = 1000) -> None:
        if not self.closed:
            with contextlib.suppress(OSError):
                self.send(CLOSE, struct.pack("!H", code))
            self.closed = True
        with contextlib.suppress(OSError):
            self.sock.close()

    # ---- receiving (one thread) ----

    def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            chunk = self.sock.recv(max(65536, count - len(self._buffer)))
            if not chunk:
                raise EOFError("the server closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    def _frame(self) -> tuple[bool, int, bytes]:
        first, second = self._read(2)
        fin, opcode = bool(first & 0x80), first & 0x0F
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        if length > MAX_MESSAGE:
            raise WebSocketError(f"frame of {length} bytes is too large")
        key = self._read(4) if second & 0x80 else None
        payload = self._read(length)
        return fin, opcode, _mask(payload, key) if key else payload

    def receive(self) -> tuple[int, bytes]:
        """The next text, binary or close message (pings are answered here)."""
        parts: list[bytes] = []
        kind = None
        while True:
            fin, opcode, payload = self._frame()
            if opcode == PING:
                self.send(PONG, payload)
                continue
            if opcode == PONG:
                continue
            if opcode == CLOSE:
                return CLOSE, payload
            if opcode != CONTINUATION:
                kind = opcode
            elif kind is None:
                raise WebSocketError("continuation frame without a message")
            parts.append(payload)
            if fin:
                return kind, b"".join(parts)


def connect(socket_path: str, path: str, timeout: float = 30.0) -> WebSocket:
    """Open ``path`` on the HTTP server at ``socket_path`` and upgrade to a WebSocket."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(socket_path)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        )
        sock.sendall(request.encode())
        answer = bytearray()
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                raise WebSocketError("the server closed the connection during the handshake")
            answer += chunk
            if len(answer) > 1 << 20:
                raise WebSocketError("handshake answer too large")
        head, _, rest = bytes(answer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1]) if len(lines[0].split()) > 1 else 0
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            length = int(headers.get("content-length", "0") or 0)
            body = bytearray(rest)
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            text = bytes(body).decode(errors="replace").strip()
            raise WebSocketError(f"Status {status} when upgrading {path}: {text}", status, text)
        if headers.get("sec-websocket-accept") != accept_key(key):
            raise WebSocketError("the server answered the handshake with a wrong accept key")
        sock.settimeout(None)
        return WebSocket(sock, rest)
    except BaseException:
        sock.close()
        raise
