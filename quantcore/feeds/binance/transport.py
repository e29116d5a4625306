"""The two ways to read a Binance combined stream: python-binance's socket, or websockets directly.

Both open ``<ws_url>stream?streams=a/b/...`` and hand each frame's text to the codec
unchanged; everything above them (supervisor, liveness, settling, sequencing) is shared.
python-binance wraps every receive in ``asyncio.wait_for`` twice (its read loop and its
queue), so the direct transport reads with websockets' own ``recv`` — no per-frame timer,
no intermediate queue — and gets text frames as bytes, which the codec decodes as is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import websockets
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import ReadLoopClosed
from binance.ws.constants import WSListenerState

from quantcore.backoff import describe

log = logging.getLogger(__name__)

Transport = Literal["websockets", "python-binance"]
TRANSPORTS: tuple[Transport, ...] = ("websockets", "python-binance")


class SocketClosed(Exception):
    """The connection ended; the message says how."""


class StreamSocket(Protocol):
    """One open combined-stream connection."""

    async def recv(self) -> str | bytes:
        """The next frame's text; raises :class:`SocketClosed` when the connection ends."""
        ...

    async def close(self) -> None:
        """Close within a few seconds, whatever state the server is in."""
        ...


class DirectSocket:
    """websockets itself: python-binance's own transport library, without its wrapper."""

    __slots__ = ("_ws",)

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, ws_url: str, names: Sequence[str]) -> DirectSocket:
        url = f"{ws_url}stream?streams={'/'.join(names)}"
        # Binance pings every 20 s and websockets answers by itself; its own keepalive
        # pings (one per 20 s) stay far below the 5 incoming messages per second.
        ws = await websockets.connect(url, compression=None, max_size=1 << 22, close_timeout=1)
        return cls(ws)

    async def recv(self) -> str | bytes:
        try:
            frame: bytes = await self._ws.recv(decode=False)
        except websockets.ConnectionClosed as exc:
            raise SocketClosed(f"connection closed: {describe(exc)}") from None
        return frame

    async def close(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self._ws.close()
        except Exception as exc:
            log.debug("socket teardown: %s", describe(exc))


class LibrarySocket:
    """python-binance's ``multiplex_socket`` with its own reconnects disabled (the
    supervisor owns reconnects) and frames kept as text for the codec."""

    __slots__ = ("_socket",)

    def __init__(self, socket: Any) -> None:
        self._socket = socket

    @classmethod
    async def open(
        cls, client: AsyncClient, ws_url: str, names: Sequence[str], max_queue: int
    ) -> LibrarySocket:
        manager = BinanceSocketManager(client, max_queue_size=max_queue)
        manager.STREAM_URL = ws_url
        socket = manager.multiplex_socket(list(names))
        socket.MAX_RECONNECTS = 0
        socket.TIMEOUT = 1.0
        socket.json_loads = _keep_text
        wrapped = cls(socket)
        try:
            await socket.__aenter__()
        except BaseException:
            await wrapped.close()
            raise
        return wrapped

    async def recv(self) -> str | bytes:
        try:
            message: str | bytes = await self._socket.recv()
        except ReadLoopClosed as exc:
            raise SocketClosed("read loop closed") from exc
        return message

    async def close(self) -> None:
        """Its read loop only notices EXITING between receives, so the websocket is
        closed first to wake it; the whole teardown is bounded."""
        socket = self._socket
        socket.ws_state = WSListenerState.EXITING
        try:
            async with asyncio.timeout(5):
                if socket.ws is not None:
                    await socket.ws.close()
                await socket.__aexit__(None, None, None)
        except Exception as exc:
            log.debug("socket teardown: %s", describe(exc))


def _keep_text(frame: str | bytes) -> str | bytes:
    return frame


async def open_socket(
    transport: Transport, client: AsyncClient, ws_url: str, names: Sequence[str], max_queue: int
) -> StreamSocket:
    """Connect one combined-stream socket of the configured kind."""
    if transport == "websockets":
        return await DirectSocket.open(ws_url, names)
    return await LibrarySocket.open(client, ws_url, names, max_queue)
