"""``apiclient exec``'s terminal session: stdin streamed over the WebSocket, output demultiplexed
to stdout/stderr, the local terminal in raw mode and its size forwarded; the exit status kept."""

from __future__ import annotations

import contextlib
import json
import os

from reconciler.apiclient.transport import ClientError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(1 if os.isatty(1) else 0)
        return size.lines, size.columns
    except OSError:
        return 24, 80


def raw_terminal() -> Any:
    """Our stdin in raw mode (keys reach the remote terminal as typed); the undo."""
    if not os.isatty(0):
        return None
    import termios
    import tty as tty_module

    saved = termios.tcgetattr(0)
    tty_module.setraw(0)
    return lambda: termios.tcsetattr(0, termios.TCSADRAIN, saved)


def run(ws: Any, tty: bool) -> int:
    import signal
    import threading

    from reconciler import wsclient

    def forward_stdin() -> None:
        try:
            while data := os.read(0, 65536):
                ws.send_binary(data)
            ws.send_text('{"type": "eof"}')
        except (OSError, wsclient.WebSocketError):
            pass

    if tty and os.isatty(1):
        def resized(_signum: int, _frame: Any) -> None:
            rows, cols = terminal_size()
            with contextlib.suppress(OSError, wsclient.WebSocketError):
                ws.send_text(json.dumps({"type": "resize", "rows": rows, "cols": cols}))

        signal.signal(signal.SIGWINCH, resized)
    threading.Thread(target=forward_stdin, name="stdin", daemon=True).start()
    while True:
        try:
            kind, payload = ws.receive()
        except EOFError:
            raise ClientError("apiclient exec: the server closed the connection") from None
        if kind == wsclient.BINARY and payload:
            fd = 2 if payload[:1] == b"\x02" else 1
            data = payload[1:]
            while data:
                data = data[os.write(fd, data):]
        elif kind == wsclient.TEXT:
            message = json.loads(payload)
            if message.get("type") == "exit":
                return int(message.get("code", 1))
            if message.get("type") == "error":
                raise ClientError(f"apiclient exec: {message.get('message')}")
        elif kind == wsclient.CLOSE:
            raise ClientError("apiclient exec: the server closed the session without an exit code")
