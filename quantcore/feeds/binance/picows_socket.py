"""``feed.transport: picows``: Binance's frames read by picows (Cython framing, one
callback per frame), through its public API only.

picows parses the frames and answers pings; a close from the server is answered and
the connection ended here (picows hands close frames to the listener). Each data
message's payload is handed to the feed's callback as ``bytes``, unvalidated: the codec
refuses text that is not UTF-8, so such a frame is counted as malformed, never recorded.
Fragmented messages (Binance sends none) are assembled, up to the same size limit as a
frame; a continuation out of place or reserved bits end the connection as a protocol
error (1002), as websockets would.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence

from picows import (
    WSCloseCode,
    WSFrame,
    WSListener,
    WSMsgType,
    WSProtocolError,
    WSTransport,
    ws_connect,
)

from quantcore.backoff import describe
from quantcore.feeds.binance.stream_socket import OnFrame, SocketClosed

log = logging.getLogger(__name__)

MAX_SIZE = 1 << 22
"""Largest message accepted (4 MiB, as the websockets transport): Binance's are < 1 KiB."""

_TEXT, _BINARY, _CONT, _CLOSE = (
    WSMsgType.TEXT,
    WSMsgType.BINARY,
    WSMsgType.CONTINUATION,
    WSMsgType.CLOSE,
)


def _drop(message: bytes) -> None:
    return None


class _Listener(WSListener):
    """Hands each data message to ``deliver``: first into :attr:`early` (up to
    ``limit``, then reading pauses: TCP back-pressure), then to the feed's callback."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.early: list[bytes] = []
        self.deliver: Callable[[bytes], None] = self._hold
        self.failure: Exception | None = None
        """What ``deliver`` raised; :meth:`PicowsSocket.run` raises it."""
        self.problem: str | None = None
        """Why the connection ended, when this side ended it or the server closed it."""
        self.detached = False
        self.disconnected = False
        self.transport: WSTransport | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._parts: list[bytes] = []
        self._size = 0

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if (kind is _TEXT or kind is _BINARY) and frame.fin and not self._parts:
            if frame.rsv1 or frame.rsv2 or frame.rsv3:
                self._protocol_error(transport, "reserved bits set (no extension negotiated)")
                return
            try:
                self.deliver(frame.get_payload_as_bytes())
            except Exception as exc:
                self._failed(transport, exc)
            return
        if kind is _CLOSE:
            code = frame.get_close_code()
            self.problem = f"received {code.value} ({frame.get_close_reason()})"
            transport.send_close(code if code is not WSCloseCode.NO_INFO else WSCloseCode.OK)
            transport.disconnect()
            self.stop()
        elif kind is _TEXT or kind is _BINARY or kind is _CONT:
            self._fragment(transport, frame)
        # a pong (for picows' idle pings, which it consumes itself) needs nothing

    def _fragment(self, transport: WSTransport, frame: WSFrame) -> None:
        """RFC 6455 5.4: a TEXT or BINARY frame without FIN, then CONTINUATION frames, the
        last one with FIN; one message, delivered whole."""
        starts = frame.msg_type is not _CONT
        if starts == bool(self._parts):
            where = "inside" if starts else "outside"
            self._protocol_error(transport, f"a data frame {where} a fragmented message")
            return
        if frame.rsv1 or frame.rsv2 or frame.rsv3:
            self._protocol_error(transport, "reserved bits set (no extension negotiated)")
            return
        self._size += frame.payload_size
        if self._size > MAX_SIZE:
            self.problem = f"message over {MAX_SIZE} bytes"
            transport.send_close(WSCloseCode.MESSAGE_TOO_BIG)
            transport.disconnect()
            self.stop()
            return
        self._parts.append(frame.get_payload_as_bytes())
        if not frame.fin:
            return
        message = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        try:
            self.deliver(message)
        except Exception as exc:
            self._failed(transport, exc)

    def _protocol_error(self, transport: WSTransport, why: str) -> None:
        self.problem = f"sent 1002 (protocol error): {why}"
        transport.send_close(WSCloseCode.PROTOCOL_ERROR)
        transport.disconnect()
        self.stop()

    def _failed(self, transport: WSTransport, exc: Exception) -> None:
        """``deliver`` raised: run() ends with it and nothing more is delivered."""
        self.failure = exc
        self.stop()
        transport.disconnect(False)

    def _hold(self, message: bytes) -> None:
        self.early.append(message)
        if len(self.early) >= self.limit and self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        self.stop()

    def stop(self) -> None:
        """Deliver nothing more and wake :meth:`PicowsSocket.run`."""
        self.deliver = _drop
        if not self.ended.done():
            self.ended.set_result(None)


class PicowsSocket:
    """One combined-stream connection read by picows; the contract of
    :class:`~.transport.StreamSocket`."""

    __slots__ = ("_listener", "_transport")

    def __init__(self, transport: WSTransport, listener: _Listener) -> None:
        self._transport = transport
        self._listener = listener

    @classmethod
    async def open(
        cls,
        ws_url: str,
        names: Sequence[str],
        max_queue: int,
        ssl_context: ssl.SSLContext | None = None,
    ) -> PicowsSocket:
        """Connect; ``wss:`` verifies the server against the system's trust store unless
        ``ssl_context`` says otherwise (picows' ``ssl_context``)."""
        url = f"{ws_url}stream?streams={'/'.join(names)}"
        context = ssl_context
        if context is None and url.startswith("wss:"):
            context = ssl.create_default_context()
        # Binance pings every 20 s and picows answers; its own ping after 20 s without
        # data (a pong due within 20 s) matches websockets' keepalive.
        transport, listener = await ws_connect(
            lambda: _Listener(max_queue),
            url,
            ssl_context=context,
            enable_auto_ping=True,
            auto_ping_idle_timeout=20,
            auto_ping_reply_timeout=20,
            max_frame_size=MAX_SIZE,
        )
        assert isinstance(listener, _Listener)
        listener.transport = transport
        return cls(transport, listener)

    async def run(self, on_frame: OnFrame) -> None:
        listener = self._listener
        early, listener.early = listener.early, []
        for message in early:
            on_frame(message)
        if not listener.ended.done():
            self._transport.underlying_transport.resume_reading()
            listener.deliver = on_frame
            try:
                await asyncio.shield(listener.ended)
            finally:
                listener.deliver = _drop
        if listener.failure is not None:
            raise listener.failure
        if not listener.detached:
            raise SocketClosed(f"connection closed: {await self._why()}")

    async def _why(self) -> str:
        """How the connection ended: a close frame, a protocol error either side saw
        (picows re-raises its own from ``wait_disconnected``), or the TCP connection."""
        try:
            async with asyncio.timeout(1):
                await self._transport.wait_disconnected()
        except TimeoutError:
            pass
        except WSProtocolError as exc:
            return f"sent {exc.code.value}: {describe(exc)}"
        except Exception as exc:
            return describe(exc)
        return self._listener.problem or "no close frame received"

    def detach(self) -> None:
        self._listener.detached = True
        self._listener.stop()

    async def close(self) -> None:
        transport = self._transport
        try:
            if not self._listener.disconnected:
                transport.send_close(WSCloseCode.OK)
                async with asyncio.timeout(1):
                    await transport.wait_disconnected()
        except Exception as exc:
            log.debug("socket teardown: %s", describe(exc))
        finally:
            transport.disconnect(False)
