"""The fast path of ``feed.transport: websockets`` on websockets 16 and 17 only.

It subclasses websockets' asyncio client connection and reads its internals (the
protocol's reader buffer and message limit, the closing deadline, ``process_event``),
which are not public API and differ before 16: :func:`~.transport.open_socket` uses it
only on the versions it is tested with, and websockets' public ``recv`` loop
(:class:`~.transport.PublicSocket`) everywhere else. Measured: the public loop costs
1.6-1.9x this path's CPU per frame (README, Performance).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.frames import Frame, Opcode
from websockets.protocol import Event, State

from quantcore.backoff import describe
from quantcore.feeds.binance.transport import OnFrame, SocketClosed

log = logging.getLogger(__name__)

TEXT, BINARY, CONT = Opcode.TEXT, Opcode.BINARY, Opcode.CONT
_HANDED_OVER = frozenset({0x0, 0x8}) | frozenset(range(3, 8)) | frozenset(range(11, 16))
"""Continuation, close and the reserved opcodes: websockets reads on from such a frame."""
_MAX_LENGTH = 2**63 - 1


def _drop(message: bytes) -> None:
    return None


class _PushConnection(ClientConnection):
    """websockets' client connection with each complete data message handed to
    ``deliver`` as it arrives, instead of queued for ``recv`` (which is never called).

    After the handshake, the frames Binance sends (unmasked, unfragmented text, at most
    ``max_size``) are cut from the byte stream here: their header is two to ten bytes,
    and websockets' general parser (a generator per frame, an enum per opcode) costs
    about a third of the CPU of a whole frame's journey. Every other frame goes to
    websockets whole, at a frame boundary: control frames (pings are answered, pongs
    acknowledged, a close starts the closing handshake) one at a time, and anything
    unusual (fragments, reserved bits, a mask, an oversized frame) takes websockets back
    for the rest of the connection, so its checks and errors apply unchanged.
    """

    limit = 100_000
    """Messages held before :meth:`CuttingSocket.run` starts; then reading pauses (TCP
    back-pressure, as websockets' own queue does) until it starts."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.early: list[bytes] = []
        """Messages parsed before :meth:`CuttingSocket.run` started, in order."""
        self.deliver: Callable[[bytes], None] = self._hold
        self.failure: Exception | None = None
        self.detached = False
        self.ended: asyncio.Future[None] = self.loop.create_future()
        """Done when delivery stops: connection lost, ``deliver`` failed, or detached."""
        self._parts: list[bytes] = []
        self._framing = False
        """True from the handshake on, while frames are cut here (see the class)."""
        self._carry = b""
        """An incomplete frame (framing), or the last bytes of the HTTP response so far."""
        self._close_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._framing:
            self._cut_frames(self._carry + data if self._carry else data)
        elif self.response is not None:
            self._websockets_reads(data)
        else:  # the handshake: websockets reads the HTTP response, exactly up to its end
            seen = self._carry + data
            end = seen.find(b"\r\n\r\n")
            if end < 0:
                self._carry = seen[-3:]
                self._websockets_reads(data)
                return
            cut = end + 4 - len(self._carry)
            self._carry = b""
            self._websockets_reads(data[:cut])
            rest = data[cut:]
            if self.protocol.state is State.OPEN and not self.protocol.reader.buffer:
                self._framing = True
                if rest:
                    self._cut_frames(rest)
            elif rest:
                self._websockets_reads(rest)

    def _cut_frames(self, buf: bytes) -> None:
        """Deliver every complete data frame in ``buf``; keep an incomplete one (RFC 6455
        5.2: FIN, RSV1-3, opcode; MASK, 7-bit length, then 16 or 64 bits of length)."""
        size = len(buf)
        pos = 0
        limit = self.protocol.max_message_size or _MAX_LENGTH
        while size - pos >= 2:
            first = buf[pos]
            length = buf[pos + 1]
            opcode = first & 0x0F
            if first != 0x80 | opcode or length & 0x80 or opcode in _HANDED_OVER:
                self._hand_over(buf[pos:])  # a fragment, reserved bits, a mask, a close...
                return
            start = pos + 2
            if length == 126:
                start = pos + 4
                if start > size:
                    break
                length = int.from_bytes(buf[pos + 2 : start], "big")
            elif length == 127:
                start = pos + 10
                if start > size:
                    break
                length = int.from_bytes(buf[pos + 2 : start], "big")
            if length > limit:
                self._hand_over(buf[pos:])  # websockets refuses it with its own error
                return
            end = start + length
            if end > size:
                break
            if opcode <= 2:
                try:
                    self.deliver(buf[start:end])
                except Exception as exc:
                    self._failed(exc)
                    return
            else:  # a ping or a pong, whole: websockets answers or acknowledges it
                self._websockets_reads(buf[pos:end])
            pos = end
        self._carry = buf[pos:]

    def _hand_over(self, rest: bytes) -> None:
        """websockets reads the connection from this frame boundary on."""
        self._framing = False
        self._carry = b""
        self._websockets_reads(rest)

    def _websockets_reads(self, data: bytes) -> None:
        """websockets' own reading; it enforces its closing deadline only inside send,
        close and recv, none of which runs while frames are pushed, so the transport is
        aborted here once that deadline passes (a server that never ends the closing
        handshake, e.g. after a protocol error, cannot keep the socket open)."""
        super().data_received(data)
        if self.close_deadline is not None and self._close_timer is None:
            self._close_timer = self.loop.call_at(self.close_deadline, self.transport.abort)

    def process_event(self, event: Event) -> None:
        if self.response is None or not isinstance(event, Frame):
            super().process_event(event)  # the handshake response
            return
        opcode = event.opcode
        if opcode is not TEXT and opcode is not BINARY and opcode is not CONT:
            super().process_event(event)  # pongs for websockets' keepalive
            return
        data = bytes(event.data)
        if not event.fin or self._parts:  # a fragmented message (Binance sends none)
            self._parts.append(data)
            if not event.fin:
                return
            data = b"".join(self._parts)
            self._parts.clear()
        try:
            self.deliver(data)
        except Exception as exc:
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        """``deliver`` raised: run() ends with it (asyncio must not see it: it would log
        it as a protocol failure) and nothing more is delivered."""
        self.failure = exc
        self.stop()
        self.transport.abort()

    def _hold(self, message: bytes) -> None:
        self.early.append(message)
        if len(self.early) >= self.limit:
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._close_timer is not None:
            self._close_timer.cancel()
        self.stop()

    def stop(self) -> None:
        """Deliver nothing more and wake :meth:`CuttingSocket.run`."""
        self.deliver = _drop
        if not self.ended.done():
            self.ended.set_result(None)


class CuttingSocket:
    """The fast path: Binance's data frames cut from websockets' byte stream (see
    :class:`_PushConnection`); the same contract as :class:`~.transport.PublicSocket`."""

    __slots__ = ("_ws",)

    def __init__(self, ws: _PushConnection) -> None:
        self._ws = ws

    @classmethod
    async def open(cls, ws_url: str, names: Sequence[str], max_queue: int) -> CuttingSocket:
        url = f"{ws_url}stream?streams={'/'.join(names)}"
        # Binance pings every 20 s and websockets answers by itself; its own keepalive
        # pings (one per 20 s) stay far below the 5 incoming messages per second.
        ws = await connect(
            url,
            compression=None,
            max_size=1 << 22,
            close_timeout=1,
            create_connection=_PushConnection,
        )
        assert isinstance(ws, _PushConnection)
        ws.limit = max_queue
        return cls(ws)

    async def run(self, on_frame: OnFrame) -> None:
        ws = self._ws
        early, ws.early = ws.early, []
        for message in early:
            on_frame(message)
        ws.transport.resume_reading()
        if not ws.ended.done():
            ws.deliver = on_frame
            try:
                await asyncio.shield(ws.ended)
            finally:
                ws.deliver = _drop
        if ws.failure is not None:
            raise ws.failure
        if not ws.detached:
            raise SocketClosed(f"connection closed: {describe(ws.protocol.close_exc)}")

    def detach(self) -> None:
        self._ws.detached = True
        self._ws.stop()

    async def close(self) -> None:
        try:
            async with asyncio.timeout(5):
                await self._ws.close()
        except Exception as exc:
            log.debug("socket teardown: %s", describe(exc))
