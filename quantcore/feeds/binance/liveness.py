"""Liveness probes: kline streams push only when something changed, so silence is not death.

After ``stall_timeout`` without frames REST is asked whether the market moved (a newer bar
with trades, or more trades than the stream showed); only then is the connection dead. A
quiet market is asked again, less often the longer it stays quiet, and never reconnected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from quantcore.events import from_epoch_ms
from quantcore.feeds.base import FeedStats
from quantcore.feeds.binance.rest import BackfillError, BinanceRest
from quantcore.feeds.binance.settler import StreamState

log = logging.getLogger(__name__)


class SilenceProbe:
    """Judges one connection's silence, asking REST about its ``streams`` liveliest streams."""

    def __init__(self, rest: BinanceRest, stats: FeedStats, timeout: float, streams: int) -> None:
        self.rest, self.stats, self.timeout, self.streams = rest, stats, timeout, streams
        self.next_at = 0.0
        self.quiet = 0
        """Probes in a row that found the market quiet."""

    async def moved(self, streams: Sequence[StreamState], silent: float) -> bool | None:
        """True: the market moved during ``silent`` seconds without a frame (the connection
        is dead); False: it is quiet; None: not asked (within the timeout, or asked lately)."""
        loop = asyncio.get_running_loop()
        if silent <= self.timeout:
            self.quiet = 0
            return None
        if loop.time() < self.next_at:
            return None
        moved = await self._ask(streams)
        self.quiet += 1
        self.next_at = loop.time() + min(self.timeout * 2**self.quiet, max(self.timeout, 60.0))
        return moved

    async def _ask(self, streams: Sequence[StreamState]) -> bool:
        """Whether any of the liveliest ``streams`` traded since the stream last showed it."""
        self.stats.probes += 1
        live = [s for s in streams if not s.halted]
        live.sort(key=lambda s: s.seen_open or from_epoch_ms(0), reverse=True)
        moved = False
        for state in live[: self.streams]:
            symbol, interval = state.key
            try:
                rows = await self.rest.klines(symbol, interval, None, None, 1)
            except BackfillError as exc:
                log.info("liveness probe failed: %s", exc)
                return False
            if not rows:
                continue
            open_time, trades = from_epoch_ms(rows[-1][0]), int(rows[-1][8])
            seen = state.seen_open
            if seen is not None and (
                (open_time > seen and trades > 0)
                or (open_time == seen and trades > state.seen_trades)
            ):
                moved = True
            elif seen is None or open_time >= seen:
                state.seen_open, state.seen_trades = open_time, trades
        return moved
