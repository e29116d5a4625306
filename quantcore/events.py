"""Typed, immutable events carried by the bus, and the topic names they travel on.

Events are frozen ``msgspec.Struct`` schemas: one instance can be handed to every
subscriber without copies or defensive checks, and building one (once per WebSocket
frame) costs ~0.15 µs against ~1.2 µs for a frozen dataclass. Copy with
``msgspec.structs.replace``; ``gc=False`` where no field can form a cycle.
"""

from __future__ import annotations

import calendar
import time
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import msgspec

from quantcore.decimals import plain

BAR = "bar"
"""Closed bars, strictly increasing in open time per (symbol, interval)."""
BAR_PARTIAL = "bar.partial"
"""In-progress updates of the bar that is still forming (Binance ``x: false``)."""
FEED_STATUS = "feed.status"
"""Connection lifecycle and feed problems (connects, disconnects, malformed frames)."""
SIGNAL = "signal"
"""Strategy output."""
GAP = "gap"
"""Ranges of closed bars that will never be published, and why (:class:`GapEvent`)."""


class BarDecimals(msgspec.Struct, frozen=True, gc=False):
    """The exchange's own decimal strings of one bar's prices and volumes, verbatim.

    They are the exact values (``"0.00001036"``, ``"6732223209.87654307"``) that the CSV
    and the SQLite, Postgres and Redis sinks store; the float fields of
    :class:`BarEvent` are derived from them. A msgspec Struct rather than a dataclass
    because one is built per frame on the hot path, and this builds ~10x faster.
    """

    open: str
    high: str
    low: str
    close: str
    volume: str
    quote_volume: str
    taker_buy_volume: str
    taker_buy_quote_volume: str


class BarEvent(msgspec.Struct, frozen=True, gc=False):
    """One kline update from the exchange; ``closed`` marks the final version of the bar.

    Times are timezone-aware UTC datetimes taken from the exchange (authoritative);
    ``received_ns`` is this machine's wall clock (epoch ns) when the frame arrived,
    kept as an int so latency can be measured without float rounding.

    Prices and volumes come twice: as floats (for arithmetic, pandas, backtrader) and, in
    ``decimals``, as the exchange's exact strings, which everything that stores or prints
    a bar uses. The codec always fills ``decimals``; a bar built in code may leave it
    None, and :meth:`decimal_strings` then writes its floats out in plain notation.
    """

    symbol: str
    interval: str
    open_time: datetime
    close_time: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    """Base-asset volume (Binance ``k.v``)."""
    quote_volume: float
    """Quote-asset volume (Binance ``k.q``)."""
    trades: int
    taker_buy_volume: float
    taker_buy_quote_volume: float
    closed: bool
    event_time: datetime
    received_ns: int = 0
    decimals: BarDecimals | None = None
    """The exchange's exact strings of the eight float fields above (None: built in code)."""
    replayed: bool = False
    """Read back from a store (a replay, or a warm start's past bars), not from the feed:
    components see it like any closed bar, recorders never write it (it is stored already)."""

    def decimal_strings(self) -> BarDecimals:
        """The exact strings: the exchange's if known, else the floats in plain notation."""
        if self.decimals is not None:
            return self.decimals
        return BarDecimals(
            plain(self.open),
            plain(self.high),
            plain(self.low),
            plain(self.close),
            plain(self.volume),
            plain(self.quote_volume),
            plain(self.taker_buy_volume),
            plain(self.taker_buy_quote_volume),
        )

    @property
    def key(self) -> tuple[str, str]:
        """The stream this bar belongs to: (symbol, interval)."""
        return (self.symbol, self.interval)

    @property
    def open_time_ms(self) -> int:
        """Open time as Binance epoch milliseconds (exact: bar times are whole ms)."""
        return epoch_ms(self.open_time)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Aware datetime → epoch milliseconds, exactly (no float rounding)."""
    return (moment - _EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    """Epoch milliseconds → aware UTC datetime, exactly; the inverse of :func:`epoch_ms`."""
    return _EPOCH + timedelta(milliseconds=ms)


DATETIME_FORMAT = "%Y-%m-%d %H:%M:%S"
"""UTC time as quantcore writes it: the CSV's ``datetime``, gap files, logs and messages."""


def datetime_text(ms: int) -> str:
    """Epoch milliseconds as :data:`DATETIME_FORMAT` text (UTC, whole seconds)."""
    return time.strftime(DATETIME_FORMAT, time.gmtime(ms // 1000))


def parse_datetime_ms(text: str) -> int:
    """:data:`DATETIME_FORMAT` text (UTC) → epoch ms; ValueError if it is not one."""
    return calendar.timegm(time.strptime(text, DATETIME_FORMAT)) * 1000


def utc_text(ms: int) -> str:
    """Epoch milliseconds as ``YYYY-MM-DD HH:MM:SS UTC``, for log lines and messages."""
    return f"{datetime_text(ms)} UTC"


class Side(StrEnum):
    """Direction of a strategy signal."""

    BUY = "buy"
    SELL = "sell"


class SignalEvent(msgspec.Struct, frozen=True, gc=False):
    """A strategy's decision, published on :data:`SIGNAL` for loggers or executors."""

    source: str
    symbol: str
    interval: str
    side: Side
    price: float
    time: datetime
    reason: str = ""


class FeedState(StrEnum):
    """Lifecycle of a feed connection, published on :data:`FEED_STATUS`."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKFILLING = "backfilling"
    LIVE = "live"
    DISCONNECTED = "disconnected"
    STALLED = "stalled"
    MALFORMED = "malformed"
    DROPPED = "dropped"
    ERROR = "error"
    STOPPED = "stopped"


class FeedStatus(msgspec.Struct, frozen=True, gc=False):
    """Something happened to a feed that subscribers (and operators) may care about."""

    feed: str
    state: FeedState
    detail: str = ""
    time: datetime = msgspec.field(default_factory=lambda: datetime.now(UTC))


class GapReason(StrEnum):
    """Why a range of bars is missing on purpose; the text is what ``quantcore check`` shows."""

    BACKFILL_LIMIT = "skipped by backfill_limit"
    EXCHANGE = "exchange gap (no data from Binance)"


class GapEvent(msgspec.Struct, frozen=True, gc=False):
    """Bars ``first_open`` .. ``last_open`` (open times, inclusive) of one stream that the
    feed will never publish, and why; recorders write it down so the hole is explained."""

    symbol: str
    interval: str
    first_open: datetime
    last_open: datetime
    reason: GapReason

    @property
    def key(self) -> tuple[str, str]:
        """The stream this gap belongs to: (symbol, interval)."""
        return (self.symbol, self.interval)
