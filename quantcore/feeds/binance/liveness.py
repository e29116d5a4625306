"""Liveness probes: kline streams push only when something changed, so silence is not death:
a silent connection is dead only if REST shows the market moved."""

from __future__ import annotations

import logging

from quantcore.events import from_epoch_ms
from quantcore.feeds.binance.rest import BackfillError, BinanceRest
from quantcore.feeds.binance.settler import StreamState

log = logging.getLogger(__name__)


async def market_moved(rest: BinanceRest, streams: list[StreamState], probes: int) -> bool:
    """Whether any of the ``probes`` liveliest ``streams`` traded since the stream last
    showed it (a newer bar with trades, or more trades); False when REST cannot tell."""
    live = [s for s in streams if not s.halted]
    live.sort(key=lambda s: s.seen_open or from_epoch_ms(0), reverse=True)
    moved = False
    for state in live[:probes]:
        symbol, interval = state.key
        try:
            rows = await rest.klines(symbol, interval, None, None, 1)
        except BackfillError as exc:
            log.info("liveness probe failed: %s", exc)
            return False
        if not rows:
            continue
        open_time, trades = from_epoch_ms(rows[-1][0]), int(rows[-1][8])
        seen = state.seen_open
        if seen is not None and (
            (open_time > seen and trades > 0) or (open_time == seen and trades > state.seen_trades)
        ):
            moved = True
        elif seen is None or open_time >= seen:
            state.seen_open, state.seen_trades = open_time, trades
    return moved
