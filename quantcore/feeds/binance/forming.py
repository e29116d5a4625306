"""FormingBars: each stream's bar still forming, kept as the frame held it.

Nine frames in ten are in-progress updates. Converting each into a BarEvent (floats,
datetimes) for a reader who asks for the forming bar now and then would cost more than
decoding it; so the feed keeps the latest update of each stream as decoded (the kline
struct and its event time) and :meth:`FormingBars.current` converts it on request.
"""

from __future__ import annotations

from collections.abc import Mapping

from quantcore.events import BarEvent
from quantcore.feeds.base import StreamKey, StreamSequencer
from quantcore.feeds.binance.codec import KlineCodec, KlineParseError, RawKline


class FormingBars:
    """The latest in-progress update per stream: ``latest`` is written by the feed (a
    decoded kline and its event time, or a BarEvent already built for subscribers)."""

    __slots__ = ("_codec", "_sequencers", "latest")

    def __init__(self, codec: KlineCodec, sequencers: Mapping[StreamKey, StreamSequencer]) -> None:
        self._codec = codec
        self._sequencers = sequencers
        self.latest: dict[StreamKey, tuple[RawKline, int] | BarEvent] = {}

    def current(self, symbol: str, interval: str) -> BarEvent | None:
        """The latest update of the stream's bar still forming; None once that bar has
        closed (published), before any update, or if its prices are not plain decimals
        (such an update reaches nobody)."""
        key = (symbol, interval)
        entry = self.latest.get(key)
        if entry is None:
            return None
        if not isinstance(entry, BarEvent):
            try:
                entry = self.latest[key] = self._codec.convert(*entry)
            except KlineParseError:
                del self.latest[key]
                return None
        sequencer = self._sequencers.get(key)
        last = None if sequencer is None else sequencer.last
        return entry if last is None or entry.open_time > last else None
