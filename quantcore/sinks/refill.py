"""BarHistory: the narrow interface through which a sink that is behind fills its own range.

A sink learns its own last stored row when its server answers (at start or after an
outage). If the first bar it still has to write is further on, the bars in between were
published while it could not know it needed them (its server was down at start, a
backup was restored); it asks the feed's history for exactly that range and writes it
before anything later, so no other consumer receives those bars twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from quantcore.events import BarEvent


class HistoryPending(RuntimeError):
    """The history cannot yet prove the next bars final (e.g. REST lags the stream)."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Final closed bars in order, and the open time (ms) up to which the range is settled:
    every bar of the exchange before ``next_ms`` is in ``bars`` (none missing)."""

    bars: list[BarEvent]
    next_ms: int


class BarHistory(Protocol):
    """What a feed offers sinks: the exchange's final closed bars of a past range."""

    async def final_bars(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> HistoryPage:
        """Final bars with ``start_ms <= open < end_ms``, from the front of the range.

        ``end_ms`` is the open time of a bar already published, so the whole range is
        history. A page may stop short (``next_ms < end_ms``): ask again from there.
        Raises :class:`HistoryPending` or another error when nothing could be proved.
        """
        ...
