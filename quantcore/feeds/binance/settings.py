"""BinanceFeedSettings: what a Binance kline feed is told (``feed:`` in the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from quantcore.feeds.base import ReconnectPolicy
from quantcore.feeds.binance.limits import ConnectLimits, RestLimits
from quantcore.feeds.binance.stream_socket import Transport
from quantcore.feeds.binance.venues import SPOT, Venue

MAX_STREAMS_PER_CONNECTION = 1024
"""Binance rejects combined-stream connections with more streams than this."""


@dataclass(frozen=True, slots=True)
class BinanceFeedSettings:
    """Everything that differs between Binance venues is ``venue`` (endpoints, limits,
    symbols); between Binance and the local exchange, a URL here (empty: the venue's)."""

    ws_url: str = ""
    rest_url: str = ""
    venue: Venue = SPOT
    transport: Transport = "picows"
    """How frames are read: picows (default: the least CPU per frame through public API
    only, see README Performance), websockets directly, or python-binance's socket."""
    max_queue_size: int = 100_000
    stall_timeout: float = 10.0
    """Seconds without any frame before REST is asked whether the market moved."""
    backfill_limit: int | None = None
    """Opt-in cap on the first catch-up (bars); None: every bar since the resume point.
    Skipped bars are announced as a GapEvent (the CSV's ``.gaps`` sidecar)."""
    warmup_bars: int = 0
    streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    max_url_chars: int = 8000
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    healthy_after: float = 60.0
    """A connection must stay up this long before the reconnect backoff starts over."""
    settle: float = 0.0
    """Optional extra margin: seconds of exchange time a REST row's close must also be old
    before it is trusted (the evidence, REST serving a later bar, is always required)."""
    poll: float = 1.0
    """Seconds between the settler's checks for bars the stream did not deliver."""
    probe_streams: int = 3
    """How many of a silent connection's streams REST is asked about."""
    max_connection_age: float = 23.5 * 3600
    """Hand over to a fresh connection before Binance's 24 h limit closes this one."""
    connect_limits: ConnectLimits = field(default_factory=ConnectLimits)
    rest_limits: RestLimits | None = None
    """None: half the venue's documented weight per minute."""

    def __post_init__(self) -> None:
        if not self.ws_url:
            object.__setattr__(self, "ws_url", self.venue.ws_url)
        if not self.rest_url:
            object.__setattr__(self, "rest_url", self.venue.rest_url)
        if self.rest_limits is None:
            weight = self.venue.weight_per_minute // 2
            object.__setattr__(self, "rest_limits", RestLimits(weight))
