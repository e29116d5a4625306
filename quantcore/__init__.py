"""quantcore: real-time Binance kline market data → typed events on a bus → consumers.

The public API a strategy or script needs is re-exported here.
"""

from quantcore.bus import EventBus
from quantcore.component import Component, Context
from quantcore.events import (
    BAR,
    BAR_PARTIAL,
    FEED_STATUS,
    SIGNAL,
    BarEvent,
    FeedState,
    FeedStatus,
    Side,
    SignalEvent,
)

__all__ = [
    "BAR",
    "BAR_PARTIAL",
    "FEED_STATUS",
    "SIGNAL",
    "BarEvent",
    "Component",
    "Context",
    "EventBus",
    "FeedState",
    "FeedStatus",
    "Side",
    "SignalEvent",
]
