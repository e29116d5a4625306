"""Binance kline intervals and their lengths; the one table config, codec and feed share."""

from __future__ import annotations

import calendar
import time

INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
    "1w": 604_800_000,
    "1M": 0,
}
"""Interval → length in ms; ``1M`` is 0 because calendar months have no fixed length.

The one interval table of the package: feed, codec, aggregator, config and the local
exchange (``quantcore.sim.klines.INTERVALS``) all read it."""

FIXED_INTERVALS: dict[str, int] = {name: ms for name, ms in INTERVAL_MS.items() if ms}
"""The intervals with a fixed length (all but ``1M``), in ascending order."""


def interval_ms(interval: str) -> int:
    """Length of a fixed-length interval in ms; ValueError names the bad value."""
    step = INTERVAL_MS.get(interval)
    if interval == "1M":
        raise ValueError(
            "'1M' is not a fixed-length Binance interval: calendar months are not "
            "supported (record 1d or 1w instead)"
        )
    if not step:
        known = ", ".join(k for k, v in INTERVAL_MS.items() if v)
        raise ValueError(f"{interval!r} is not a fixed-length Binance interval (one of {known})")
    return step


WEEK_MS = INTERVAL_MS["1w"]
WEEK_OFFSET_MS = 4 * 86_400_000
"""Binance's weekly bars open on Monday 00:00 UTC; the epoch was a Thursday."""


def bucket_start(moment_ms: int, length_ms: int) -> int:
    """Open time of the ``length_ms`` bar holding ``moment_ms``, aligned like Binance's: to
    the epoch, weeks to Monday (the one copy: feed, aggregator and local exchange use it)."""
    if length_ms == WEEK_MS:
        return moment_ms - (moment_ms - WEEK_OFFSET_MS) % length_ms
    return moment_ms - moment_ms % length_ms


def month_bounds(moment_ms: int) -> tuple[int, int, int, int]:
    """(year, month, first ms of the month, first ms of the next month) of ``moment_ms``, UTC."""
    tm = time.gmtime(moment_ms // 1000)
    following = (tm.tm_year + 1, 1) if tm.tm_mon == 12 else (tm.tm_year, tm.tm_mon + 1)
    start = calendar.timegm((tm.tm_year, tm.tm_mon, 1, 0, 0, 0)) * 1000
    return tm.tm_year, tm.tm_mon, start, calendar.timegm((*following, 1, 0, 0, 0)) * 1000


def bar_open_ms(moment_ms: int, interval: str) -> int:
    """Open time of the ``interval`` bar containing ``moment_ms``."""
    return bucket_start(moment_ms, interval_ms(interval))
