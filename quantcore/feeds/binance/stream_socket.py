"""What every transport is to the feed: an open combined-stream socket that hands each
message's text to one callback, in order, and says how it ended.

Its own module so each transport (:mod:`.transport`, :mod:`.picows_socket`) depends on
the contract and not on each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Protocol

Transport = Literal["picows", "websockets", "python-binance"]

OnFrame = Callable[[Any], None]
"""Called with each message's text (``bytes`` or ``str``), in order, one at a time."""


class SocketClosed(Exception):
    """The connection ended; the message says how."""


class StreamSocket(Protocol):
    """One open combined-stream connection."""

    async def run(self, on_frame: OnFrame) -> None:
        """Hand every message to ``on_frame`` (those that arrived before, first) until
        :meth:`detach`; raises :class:`SocketClosed` when the connection ends, or what
        ``on_frame`` raised."""
        ...

    def detach(self) -> None:
        """Deliver nothing more: :meth:`run` returns (the socket stays open)."""
        ...

    async def close(self) -> None:
        """Close within a few seconds, whatever state the server is in."""
        ...
