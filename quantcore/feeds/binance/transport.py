"""The ways to read a Binance combined stream: picows (:mod:`.picows_socket`),
websockets directly, or python-binance's socket.

All open ``<ws_url>stream?streams=a/b/...`` and hand each frame's text to a callback
unchanged; everything above them (supervisor, liveness, settling, sequencing) is shared.
python-binance wraps every receive in ``asyncio.wait_for`` twice (its read loop and its
queue). The direct websockets transport is websockets' public ``recv`` loop
(:class:`PublicSocket`), on every websockets version setup.cfg allows.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import ReadLoopClosed
from binance.ws.constants import WSListenerState
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from quantcore.backoff import describe
from quantcore.feeds.binance.stream_socket import OnFrame, SocketClosed, StreamSocket, Transport

log = logging.getLogger(__name__)


class PublicSocket:
    """websockets through its public API only: a ``recv(decode=False)`` loop on its
    asyncio client, which answers pings, runs the closing handshake and holds up to
    ``max_queue`` frames before :meth:`run` starts (then it stops reading: TCP's
    back-pressure). Messages are handed over as bytes, not validated as UTF-8 here: the
    codec refuses text that is not UTF-8 as a malformed frame."""

    __slots__ = ("_detached", "_runner", "_ws")

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._detached = False
        self._runner: asyncio.Task[Any] | None = None

    @classmethod
    async def open(cls, ws_url: str, names: Sequence[str], max_queue: int) -> PublicSocket:
        url = f"{ws_url}stream?streams={'/'.join(names)}"
        # Binance pings every 20 s and websockets answers by itself; its own keepalive
        # pings (one per 20 s) stay far below the 5 incoming messages per second.
        ws = await connect(
            url, compression=None, max_size=1 << 22, max_queue=max_queue, close_timeout=1
        )
        return cls(ws)

    async def run(self, on_frame: OnFrame) -> None:
        recv = self._ws.recv
        self._runner = asyncio.current_task()
        guard = asyncio.ensure_future(self._bound_closing())
        try:
            while not self._detached:
                message = await recv(False)
                if self._detached:
                    return
                on_frame(message)
        except ConnectionClosed as exc:
            raise SocketClosed(f"connection closed: {describe(exc)}") from None
        except asyncio.CancelledError:
            # detach() woke a waiting recv (cancelling it loses no message); any other
            # cancellation, also one that came on top of it, goes on.
            runner = self._runner
            if self._detached and runner is not None and runner.uncancel() == 0:
                return
            raise
        finally:
            self._runner = None
            guard.cancel()

    async def _bound_closing(self) -> None:
        """websockets bounds a closing handshake (``close_timeout``) only inside ``send``
        and ``close``, not while ``recv`` waits: a server that never ends it, e.g. after
        a protocol error, would hold :meth:`run` forever. Once the connection leaves
        OPEN, ``close()`` waits for the server at most that long, then aborts."""
        ws = self._ws
        while ws.state is State.OPEN:  # noqa: ASYNC110 (websockets signals no closing)
            await asyncio.sleep(0.25)
        await ws.close()

    def detach(self) -> None:
        self._detached = True
        runner = self._runner
        if runner is not None and runner is not asyncio.current_task():
            runner.cancel()

    async def close(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self._ws.close()
        except Exception as exc:
            log.debug("socket teardown: %s", describe(exc))


class LibrarySocket:
    """python-binance's ``multiplex_socket`` with its own reconnects disabled (the
    supervisor owns reconnects) and frames kept as text for the codec."""

    __slots__ = ("_client", "_detached", "_socket")

    def __init__(self, socket: Any, client: AsyncClient) -> None:
        self._socket = socket
        self._client = client
        self._detached = False

    @classmethod
    async def open(cls, ws_url: str, names: Sequence[str], max_queue: int) -> LibrarySocket:
        client = AsyncClient()
        manager = BinanceSocketManager(client, max_queue_size=max_queue)
        manager.STREAM_URL = ws_url
        socket = manager.multiplex_socket(list(names))
        socket.MAX_RECONNECTS = 0
        socket.TIMEOUT = 1.0
        socket.json_loads = _keep_text
        wrapped = cls(socket, client)
        try:
            await socket.__aenter__()
        except BaseException:
            await wrapped.close()
            raise
        return wrapped

    async def run(self, on_frame: OnFrame) -> None:
        """Python 3.11's ``asyncio.wait_for`` inside its ``recv`` can swallow a
        cancellation when a frame arrives at the same moment: :meth:`detach` ends the
        loop for sure at the next frame."""
        socket = self._socket
        while not self._detached:
            try:
                message = await socket.recv()
            except ReadLoopClosed as exc:
                raise SocketClosed("read loop closed") from exc
            on_frame(message)

    def detach(self) -> None:
        self._detached = True

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
                await self._client.close_connection()
        except Exception as exc:
            log.debug("socket teardown: %s", describe(exc))


def _keep_text(frame: str | bytes) -> str | bytes:
    return frame


async def open_socket(
    transport: Transport, ws_url: str, names: Sequence[str], max_queue: int
) -> StreamSocket:
    """Connect one combined-stream socket of the configured kind."""
    if transport == "picows":
        from quantcore.feeds.binance.picows_socket import PicowsSocket

        return await PicowsSocket.open(ws_url, names, max_queue)
    if transport == "websockets":
        return await PublicSocket.open(ws_url, names, max_queue)
    return await LibrarySocket.open(ws_url, names, max_queue)
