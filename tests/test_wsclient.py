"""apiclient's WebSocket client (reconciler.wsclient, standard library only): its framing
against hand-made server frames on a socket pair, and a real aiohttp server on a Unix socket."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import pytest
from aiohttp import WSMsgType, web

from reconciler import wsclient
from reconciler.wsclient import BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, encode_frame


def read_client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """Parse one (masked) client frame, as a server does."""
    def read(n: int) -> bytes:
        data = b""
        while len(data) < n:
            data += sock.recv(n - len(data))
        return data
    first, second = read(2)
    assert second & 0x80, "client frames must be masked"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", read(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", read(8))
    key = read(4)
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(read(length)))
    return first & 0x0F, payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_frames_of_every_length_class_round_trip(size):
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ws = wsclient.WebSocket(ours)
        payload = bytes(i % 251 for i in range(size))
        threading.Thread(target=ws.send_binary, args=(payload,)).start()
        assert read_client_frame(theirs) == (BINARY, payload)
        theirs.sendall(encode_frame(BINARY, payload, mask=False))
        assert ws.receive() == (BINARY, payload)


def test_fragments_are_reassembled_and_pings_answered_in_between():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ws = wsclient.WebSocket(ours)
        theirs.sendall(encode_frame(TEXT, b"hel", mask=False, fin=False)
                       + encode_frame(PING, b"are you there", mask=False)
                       + encode_frame(CONTINUATION, b"lo", mask=False)
                       + encode_frame(CLOSE, struct.pack("!H", 1000), mask=False))
        assert ws.receive() == (TEXT, b"hello")
        assert read_client_frame(theirs) == (PONG, b"are you there")
        assert ws.receive()[0] == CLOSE


def test_a_closed_peer_is_an_eof_not_a_hang():
    ours, theirs = socket.socketpair()
    ws = wsclient.WebSocket(ours)
    theirs.sendall(encode_frame(BINARY, b"par", mask=False)[:3])
    theirs.close()
    with pytest.raises(EOFError):
        ws.receive()
    ws.close()


@pytest.fixture
def echo_server(tmp_path):
    """aiohttp on a Unix socket: /echo echoes every message; /refuse answers 403."""
    path = tmp_path / "ws.sock"
    loop = asyncio.new_event_loop()
    started, stop = threading.Event(), asyncio.Event()

    async def echo(request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                await ws.send_str(message.data.upper())
            elif message.type == WSMsgType.BINARY:
                await ws.send_bytes(message.data[::-1])
        return ws

    async def refuse(request):
        raise web.HTTPForbidden(text="Access denied: not you")

    async def serve():
        app = web.Application()
        app.router.add_get("/echo", echo)
        app.router.add_get("/refuse", refuse)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.UnixSite(runner, str(path)).start()
        started.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield str(path)
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


def test_handshake_and_messages_with_aiohttp(echo_server):
    ws = wsclient.connect(echo_server, "/echo")
    try:
        ws.send_text("hello")
        assert ws.receive() == (TEXT, b"HELLO")
        big = bytes(range(256)) * 1000
        ws.send_binary(big)
        assert ws.receive() == (BINARY, big[::-1])
    finally:
        ws.close()


def test_a_refused_upgrade_says_the_status_and_why(echo_server):
    with pytest.raises(wsclient.WebSocketError) as error:
        wsclient.connect(echo_server, "/refuse")
    assert error.value.status == 403
    assert str(error.value) == "Status 403 when upgrading /refuse: Access denied: not you"
