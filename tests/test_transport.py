"""The direct websockets transport's delivery contract, against a real socket on 127.0.0.1.

Every message in order (also those that arrived before ``run``, and fragmented ones),
a failing callback ends ``run`` with its own exception, ``detach`` ends it quietly, and
a closed connection is :class:`SocketClosed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve

from quantcore.feeds.binance.transport import DirectSocket, SocketClosed

Script = Callable[[ServerConnection], Awaitable[None]]


@asynccontextmanager
async def _open(script: Script, max_queue: int = 1000) -> AsyncIterator[DirectSocket]:
    async def handler(ws: ServerConnection) -> None:
        await script(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        socket = await DirectSocket.open(f"ws://127.0.0.1:{port}/", ["btcusdt@kline_1m"], max_queue)
        try:
            yield socket
        finally:
            await socket.close()


async def _run_until(socket: DirectSocket, count: int) -> list[bytes]:
    got: list[bytes] = []

    def on_frame(message: bytes) -> None:
        got.append(message)
        if len(got) == count:
            socket.detach()

    await asyncio.wait_for(socket.run(on_frame), 5)
    return got


async def test_every_message_in_order_including_early_and_fragmented_ones() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send("first")
        await ws.send(["frag", "mented"])  # one message in three frames
        await ws.send(b"\x00binary")
        for i in range(2000):
            await ws.send(f'{{"n":{i},"pad":"{"x" * 1000}"}}')

    async with _open(script, max_queue=50) as socket:
        await asyncio.sleep(0.2)  # all arrive before run(); reading pauses at 50 held
        held = len(socket._ws.early)
        got = await _run_until(socket, 2003)
    assert 50 <= held < 2003, held
    assert got[:3] == [b"first", b"fragmented", b"\x00binary"]
    assert got[3:] == [f'{{"n":{i},"pad":"{"x" * 1000}"}}'.encode() for i in range(2000)]


async def test_a_failing_callback_ends_run_with_its_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def script(ws: ServerConnection) -> None:
        await asyncio.sleep(0.05)
        for i in range(5):
            await ws.send(str(i))

    seen: list[bytes] = []

    def on_frame(message: bytes) -> None:
        seen.append(message)
        if message == b"2":
            raise LookupError("no such stream")

    caplog.set_level(logging.ERROR)
    async with _open(script) as socket:
        with pytest.raises(LookupError, match="no such stream"):
            await asyncio.wait_for(socket.run(on_frame), 5)
    assert seen == [b"0", b"1", b"2"], "nothing is delivered after the failure"
    assert not [r for r in caplog.records if "data_received" in r.getMessage()], caplog.text


async def test_a_closed_connection_is_socket_closed() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send("last")
        await ws.close(1001, "going away")

    got: list[bytes] = []
    async with _open(script) as socket:
        with pytest.raises(SocketClosed, match="1001"):
            await asyncio.wait_for(socket.run(got.append), 5)
    assert got == [b"last"]
