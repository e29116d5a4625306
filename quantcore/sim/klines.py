"""Kline values, Binance interval arithmetic and exact aggregation.

Two forms of one bar live here: `Kline` (Binance's REST strings, the public form) and
`Bar` (the same numbers as integers in units of 1e-8, used internally so that partial
updates and aggregation are exact and fast).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from quantcore.intervals import FIXED_INTERVALS
from quantcore.intervals import bucket_start as bucket_start
from quantcore.intervals import interval_ms as interval_ms

SCALE = 100_000_000
"""Units per whole number: Binance prints every price and volume with 8 decimals."""

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000

INTERVALS: dict[str, int] = FIXED_INTERVALS
"""Binance kline intervals with a fixed length; "1M" (calendar month) is not supported."""

_NAMES = {ms: name for name, ms in INTERVALS.items()}


def interval_name(ms: int) -> str:
    """Inverse of `interval_ms`; ValueError for lengths that are not a Binance interval."""
    try:
        return _NAMES[ms]
    except KeyError:
        raise ValueError(f"{ms} ms is not a Binance kline interval") from None


def to_units(text: str) -> int:
    """Exact non-negative decimal string -> integer units of 1e-8 (never via float).

    Raises ValueError for non-numbers, negatives, or more than 8 significant decimals.
    """
    if len(text) > 9 and text[-9] == "." and text[:-9].isdigit() and text[-8:].isdigit():
        return int(text[:-9]) * SCALE + int(text[-8:])
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, ValueError):
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise ValueError(f"not a non-negative finite number: {text!r}")
    scaled = value.scaleb(8)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"more than 8 decimals: {text!r}")
    return int(scaled)


def units_str(units: int) -> str:
    """Integer units of 1e-8 -> Binance's 8-decimal string, e.g. "56714.00000000".

    Hot (every served value): from one unit on, the digits are sliced, not divided."""
    if units >= SCALE:
        digits = str(units)
        return f"{digits[:-8]}.{digits[-8:]}"
    whole, frac = divmod(units, SCALE)
    return f"{whole}.{frac:08d}"


def normalize(text: str) -> str:
    """Rewrite a decimal string in Binance's exact 8-decimal form (exact, via Decimal)."""
    return units_str(to_units(text))


@dataclass(frozen=True, slots=True)
class Kline:
    """One bar in Binance REST form; numeric strings always carry exactly 8 decimals."""

    open_time: int
    open: str
    high: str
    low: str
    close: str
    volume: str
    close_time: int
    quote_volume: str
    trades: int
    taker_buy_base: str
    taker_buy_quote: str

    @property
    def interval_ms(self) -> int:
        """Bar length implied by its times (close_time is open_time + length - 1)."""
        return self.close_time - self.open_time + 1

    def to_rest(self) -> list[int | str]:
        """The 12-field array `GET /api/v3/klines` returns: the fields in order, then "0"."""
        return [*astuple(self), "0"]

    @classmethod
    def from_rest(cls, row: Sequence[object]) -> Kline:
        """Parse a REST kline array (11 or 12 fields); numbers are normalised exactly."""
        if len(row) < 11:
            raise ValueError(f"expected 12 kline fields, got {len(row)}")
        return Bar.from_fields(row).kline()

    def units(self) -> Bar:
        """The same bar as exact integers."""
        return Bar(
            self.open_time,
            self.close_time,
            to_units(self.open),
            to_units(self.high),
            to_units(self.low),
            to_units(self.close),
            to_units(self.volume),
            to_units(self.quote_volume),
            self.trades,
            to_units(self.taker_buy_base),
            to_units(self.taker_buy_quote),
        )


class Bar(NamedTuple):
    """A kline as integers (prices/volumes in units of 1e-8): exact and cheap to combine."""

    open_time: int
    close_time: int
    open: int
    high: int
    low: int
    close: int
    volume: int
    quote_volume: int
    trades: int
    taker_base: int
    taker_quote: int

    @classmethod
    def from_fields(cls, row: Sequence[object]) -> Bar:
        """Build from REST-ordered values (ints or decimal strings, floats rejected)."""

        def num(value: object) -> int:
            if isinstance(value, bool | float):
                raise ValueError(f"expected a decimal string, got {value!r}")
            return value * SCALE if isinstance(value, int) else to_units(str(value))

        def whole(value: object) -> int:
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)

        return cls(
            whole(row[0]),
            whole(row[6]),
            num(row[1]),
            num(row[2]),
            num(row[3]),
            num(row[4]),
            num(row[5]),
            num(row[7]),
            whole(row[8]),
            num(row[9]),
            num(row[10]),
        )

    def kline(self) -> Kline:
        """The public string form (positional: Kline's field order, cheaper than keywords)."""
        return Kline(
            self.open_time,
            units_str(self.open),
            units_str(self.high),
            units_str(self.low),
            units_str(self.close),
            units_str(self.volume),
            self.close_time,
            units_str(self.quote_volume),
            self.trades,
            units_str(self.taker_base),
            units_str(self.taker_quote),
        )

    def rest_row(self) -> list[int | str]:
        """The 12-field REST array, without building a `Kline` first."""
        return [
            self.open_time,
            units_str(self.open),
            units_str(self.high),
            units_str(self.low),
            units_str(self.close),
            units_str(self.volume),
            self.close_time,
            units_str(self.quote_volume),
            self.trades,
            units_str(self.taker_base),
            units_str(self.taker_quote),
            "0",
        ]

    def problem(self) -> str | None:
        """Why this bar is internally inconsistent, or None when it is a valid kline."""
        if self.close_time < self.open_time:
            return "close_time before open_time"
        if self.low > min(self.open, self.close) or self.high < max(self.open, self.close):
            return "low/high do not enclose open and close"
        if self.taker_base > self.volume or self.taker_quote > self.quote_volume:
            return "taker volume exceeds total volume"
        if self.trades < 0:
            return "negative trade count"
        return None


def extend(acc: Bar, bar: Bar, close_time: int) -> Bar:
    """Fold `bar` (later in time) into the running aggregate `acc`."""
    return Bar(
        acc.open_time,
        close_time,
        acc.open,
        max(acc.high, bar.high),
        min(acc.low, bar.low),
        bar.close,
        acc.volume + bar.volume,
        acc.quote_volume + bar.quote_volume,
        acc.trades + bar.trades,
        acc.taker_base + bar.taker_base,
        acc.taker_quote + bar.taker_quote,
    )


def merge(bars: Sequence[Bar], open_time: int, close_time: int) -> Bar:
    """One bar from consecutive bars: open first, close last, high max, low min, sums exact."""
    first = bars[0]
    acc = Bar(open_time, close_time, *first[2:])
    for bar in bars[1:]:
        acc = extend(acc, bar, close_time)
    return acc


def aggregate_bars(bars: Iterable[Bar], length_ms: int) -> list[Bar]:
    """Group time-ordered bars into Binance-aligned buckets of `length_ms`."""
    out: list[Bar] = []
    group: list[Bar] = []
    current = -1
    for bar in bars:
        b = bucket_start(bar.open_time, length_ms)
        if b != current and group:
            out.append(merge(group, current, current + length_ms - 1))
            group = []
        current = b
        group.append(bar)
    if group:
        out.append(merge(group, current, current + length_ms - 1))
    return out


def aggregate(klines: Iterable[Kline], interval: str) -> list[Kline]:
    """Aggregate time-ordered klines (e.g. 1m) into a higher Binance interval."""
    length = interval_ms(interval)
    return [bar.kline() for bar in aggregate_bars((k.units() for k in klines), length)]
