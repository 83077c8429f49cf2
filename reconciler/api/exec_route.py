"""``GET /exec``: a command in a host container, over a WebSocket on the API socket.

As Bottlerocket's ``apiclient exec``: the client's first message (text) says what to run::

    {"target": "admin", "command": ["sh", "-c", "..."], "tty": false, "rows": 24, "cols": 80}

then binary messages carry its stdin, and text messages control it: ``{"type": "resize",
"rows": R, "cols": C}`` (with a TTY) and ``{"type": "eof"}`` (stdin closed). The server answers
with binary messages whose first byte names the stream (1 stdout, 2 stderr; a TTY has only 1)
and ends with one text message, ``{"type": "exit", "code": N}`` or ``{"type": "error",
"message": "..."}``. The command runs through the engine (``podman exec``), with a
pseudo-terminal of ours in front of it when a TTY is asked, so window sizes reach it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import pty
import signal
import struct
import termios
from typing import Any

from aiohttp import WSMsgType, web

from reconciler.containers import HostContainers
from reconciler.host import Host
from reconciler.logs import get_logger

STDOUT, STDERR = b"\x01", b"\x02"
INIT_TIMEOUT = 30.0
log = get_logger("exec")
audit = get_logger("audit")


class ExecRefused(Exception):
    """The init message asks for something we will not run; the message says why."""


def parse_init(raw: str) -> dict[str, Any]:
    try:
        init = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ExecRefused(f"the first message is not JSON: {error}") from None
    if not isinstance(init, dict):
        raise ExecRefused("the first message must be a JSON object")
    target, command = init.get("target"), init.get("command")
    if not isinstance(target, str) or not target:
        raise ExecRefused("'target' (the host container's name) is required")
    if not isinstance(command, list) or not command or not all(
        isinstance(c, str) and "\0" not in c for c in command
    ):
        raise ExecRefused("'command' must be a non-empty list of strings")
    return {
        "target": target,
        "command": command,
        "tty": bool(init.get("tty", False)),
        "rows": _size(init.get("rows"), 24),
        "cols": _size(init.get("cols"), 80),
    }


def _size(value: Any, default: int) -> int:
    return value if isinstance(value, int) and 0 < value < 10000 else default


def _containers(host: Host) -> HostContainers:
    if host.containers is None:
        raise ExecRefused("this daemon runs no host containers")
    return host.containers


def _check_target(containers: HostContainers, target: str) -> None:
    """Only a running host container of ours, never another container of the storage."""
    observed = containers.engine.list() if containers.engine.initialized() else []
    ours = {c.name: c for c in observed if c.managed}
    found = ours.get(target)
    if found is None:
        known = ", ".join(sorted(ours)) or "none"
        raise ExecRefused(f"no host container named {target!r} (host containers: {known})")
    if not found.running:
        raise ExecRefused(f"host container {target!r} is not running ({found.state})")


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_terminal() -> None:  # in the child, before exec
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


async def exec_handler(request: web.Request) -> web.StreamResponse:
    from reconciler.api.server import HOST, peer

    host = request.app[HOST]
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=16 * 1024 * 1024)
    await ws.prepare(request)
    try:
        message = await asyncio.wait_for(ws.receive(), INIT_TIMEOUT)
        if message.type != WSMsgType.TEXT:
            raise ExecRefused("the first message must be the JSON init message (text)")
        init = parse_init(message.data)
        containers = _containers(host)
        await asyncio.to_thread(_check_target, containers, init["target"])
        audit.info("api exec", target=init["target"], command=init["command"],
                   tty=init["tty"], **peer(request))
        code = await _run(ws, containers, init)
        await ws.send_str(json.dumps({"type": "exit", "code": code}))
    except ExecRefused as error:
        await ws.send_str(json.dumps({"type": "error", "message": str(error)}))
    except TimeoutError:
        await ws.send_str(json.dumps({"type": "error", "message": "no init message in time"}))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        await ws.close()
    return ws


async def _run(ws: web.WebSocketResponse, containers: HostContainers, init: dict) -> int:
    flags = ["--interactive"] + (["--tty"] if init["tty"] else [])
    argv = containers.engine.command("exec", *flags, init["target"], *init["command"])
    if init["tty"]:
        return await _run_tty(ws, argv, init)
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdin and process.stdout and process.stderr

    async def pump(stream: asyncio.StreamReader, tag: bytes) -> None:
        while data := await stream.read(65536):
            await ws.send_bytes(tag + data)

    async def feed() -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                with contextlib.suppress(ConnectionError):
                    process.stdin.write(message.data)
                    await process.stdin.drain()
            elif message.type == WSMsgType.TEXT and _control(message.data).get("type") == "eof":
                process.stdin.close()
        if process.returncode is None:  # the client went away
            process.terminate()

    feeder = asyncio.create_task(feed())
    try:
        await asyncio.gather(pump(process.stdout, STDOUT), pump(process.stderr, STDERR))
        return await process.wait()
    finally:
        feeder.cancel()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _run_tty(ws: web.WebSocketResponse, argv: list[str], init: dict) -> int:
    master, slave = pty.openpty()
    _set_size(slave, init["rows"], init["cols"])
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=slave, stdout=slave, stderr=slave, preexec_fn=_controlling_terminal,
        )
    finally:
        os.close(slave)
    loop = asyncio.get_running_loop()
    output: asyncio.Queue[bytes] = asyncio.Queue()

    def readable() -> None:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every writer of the terminal is gone
            data = b""
        if not data:
            loop.remove_reader(master)
        output.put_nowait(data)

    loop.add_reader(master, readable)

    async def pump() -> None:
        while data := await output.get():
            await ws.send_bytes(STDOUT + data)

    async def feed() -> None:
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await asyncio.to_thread(os.write, master, message.data)
            elif message.type == WSMsgType.TEXT:
                control = _control(message.data)
                if control.get("type") == "resize":
                    _set_size(master, _size(control.get("rows"), 24),
                              _size(control.get("cols"), 80))
                    with contextlib.suppress(ProcessLookupError):
                        process.send_signal(signal.SIGWINCH)
        if process.returncode is None:
            process.terminate()

    feeder = asyncio.create_task(feed())
    pumper = asyncio.create_task(pump())
    try:
        code = await process.wait()
        with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
            await asyncio.wait_for(pumper, 5.0)  # what the command wrote before it ended
        return code
    finally:
        feeder.cancel()
        pumper.cancel()
        loop.remove_reader(master)
        os.close(master)
        if process.returncode is None:
            process.kill()
            await process.wait()


def _control(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def register(app: web.Application) -> None:
    app.router.add_get("/exec", exec_handler)
