"""The seeded random walk: a synthetic market whose every bar is a pure function of time.

Any symbol, any interval, the same bars on every run and in every process, so tests and
demos need no data files and two exchanges with one seed agree bar for bar.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import numpy as np

from .klines import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    SCALE,
    Bar,
    aggregate_bars,
    bucket_start,
    interval_ms,
    merge,
)
from .realism import stable_hash
from .sources import KlineSource, seeded

ORIGIN_MS = 1_483_228_800_000
"""2017-01-01 00:00 UTC: the first bar a `RandomWalkSource` has (what `startTime=0` finds)."""

_KNOWN_LEVELS = {
    "BTCUSDT": 60_000.0,
    "ETHUSDT": 3_000.0,
    "BNBUSDT": 550.0,
    "SOLUSDT": 150.0,
    "XRPUSDT": 0.6,
    "DOGEUSDT": 0.12,
}
_DAY_SIGMA = 0.03  # daily log-return volatility
_REVERSION = 0.02  # daily pull of the log price back to the symbol's level (keeps it realistic)
_DAY_BLOCK = 256
_WINDOW = 512  # shocks older than this weigh < 0.98**512 = 3e-5: negligible
_DECAY = (1.0 - _REVERSION) ** np.arange(_WINDOW)
_MINUTE_SIGMA = _DAY_SIGMA / math.sqrt(1440.0)


_DAY_TABLES: OrderedDict[tuple[int, int], np.ndarray[Any, np.dtype[np.int64]]] = OrderedDict()
"""Recently generated day tables of all random-walk sources (about 100 kB each)."""


class RandomWalkSource(KlineSource):
    """Deterministic synthetic klines: every bar is a pure function of (seed, symbol, time).

    Log price = symbol level + a mean-reverting daily walk (AR(1) of shocks drawn from RNGs
    seeded by (seed, symbol, block of days)); each day's 1440 minutes come
    from an RNG seeded by (seed, symbol, day), bridged to end on the next day's level. So any
    bar is computed from its day alone, cheaply, and reruns agree. Higher intervals are exact
    aggregates of the 1m bars.
    """

    def __init__(self, symbol: str, interval: str = "1m", seed: int = 0) -> None:
        length = interval_ms(interval)
        if length < MINUTE_MS:
            raise ValueError(f"RandomWalkSource resolution is 1m; interval {interval} is finer")
        self.symbol = symbol.upper()
        self.interval = interval
        self.interval_ms = length
        self.seed = seed
        self._key = stable_hash(seed, self.symbol)
        u = seeded("level", self.symbol).random()
        self._level: float = _KNOWN_LEVELS.get(self.symbol, 10 ** (-1.0 + 5.0 * u))
        magnitude = math.ceil(math.log10(self._level))
        price_decimals = min(8, max(0, 7 - magnitude))
        volume_decimals = min(8, max(0, 7 - price_decimals))
        self._tick: int = 10 ** (8 - price_decimals)
        self._vtick: int = 10 ** (8 - volume_decimals)
        quote_per_minute = 600_000.0 if self.symbol == "BTCUSDT" else 10 ** (3.0 + 2.5 * u)
        self._coins_per_minute = quote_per_minute / self._level
        self._quote_per_trade = quote_per_minute / 1_000.0
        self._levels: OrderedDict[int, float] = OrderedDict()
        self._shock_blocks: OrderedDict[int, np.ndarray[Any, np.dtype[np.float64]]] = OrderedDict()
        self._hours: OrderedDict[int, np.ndarray[Any, np.dtype[np.int64]]] = OrderedDict()
        self._hour_aggs: OrderedDict[int, Bar] = OrderedDict()
        first = bucket_start(ORIGIN_MS, length)
        self._first = first if first == ORIGIN_MS else first + length

    @property
    def first_open_ms(self) -> int:
        return self._first

    @property
    def end_ms(self) -> None:
        return None

    def next_open_ms(self, t_ms: int) -> int | None:
        start = bucket_start(t_ms, self.interval_ms)
        if start < t_ms:
            start += self.interval_ms
        return max(start, self._first)

    def bars(self, start_ms: int, end_ms: int) -> list[Bar]:
        if self.interval_ms != MINUTE_MS:
            return self.aggregated(self.interval_ms, start_ms, end_ms)
        return self._minutes(start_ms, end_ms)

    def bar(self, open_ms: int) -> Bar | None:
        if open_ms < self._first or open_ms % self.interval_ms:
            return None
        if self.interval_ms != MINUTE_MS:
            return super().bar(open_ms)
        hour, offset = divmod(open_ms - ORIGIN_MS, HOUR_MS)
        values: list[int] = self._hour_rows(hour)[offset // MINUTE_MS].tolist()
        return Bar(open_ms, open_ms + MINUTE_MS - 1, *values)

    def aggregated(self, length_ms: int, start_ms: int, end_ms: int) -> list[Bar]:
        lo = max(bucket_start(start_ms, length_ms), bucket_start(self._first, length_ms))
        if lo < start_ms or lo < self._first:
            lo += length_ms
        if length_ms == MINUTE_MS:
            return self._minutes(lo, end_ms)
        if length_ms % HOUR_MS:
            hi = bucket_start(end_ms - 1, length_ms) + length_ms if end_ms > lo else lo
            return aggregate_bars(self._minutes(lo, hi), length_ms)
        out: list[Bar] = []
        while lo < end_ms:
            hours = [self._hour_agg(t) for t in range(lo, lo + length_ms, HOUR_MS)]
            out.append(merge(hours, lo, lo + length_ms - 1))
            lo += length_ms
        return out

    # -- generation ------------------------------------------------------------------------

    def _minutes(self, start_ms: int, end_ms: int) -> list[Bar]:
        """1m bars opening in [start_ms, end_ms), an hour block at a time."""
        lo = max(start_ms, ORIGIN_MS)
        if lo % MINUTE_MS:
            lo += MINUTE_MS - lo % MINUTE_MS
        out: list[Bar] = []
        while lo < end_ms:
            hour, offset = divmod(lo - ORIGIN_MS, HOUR_MS)
            first = offset // MINUTE_MS
            last = min(60, first + -(-(end_ms - lo) // MINUTE_MS))
            rows: list[list[int]] = self._hour_rows(hour)[first:last].tolist()
            make = Bar._make  # namedtuple's public constructor from an iterable: 2x Bar(*...)
            out.extend(
                [
                    make((t, t + MINUTE_MS - 1, *values))
                    for t, values in zip(
                        range(lo, lo + len(rows) * MINUTE_MS, MINUTE_MS), rows, strict=True
                    )
                ]
            )
            lo = ORIGIN_MS + (hour + 1) * HOUR_MS
        return out

    def _hour_rows(self, hour: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The hour's 60 minutes as a (60, 9) int table, cached per source (4.3 kB each)."""
        rows = self._hours.get(hour)
        if rows is None:
            day, h = divmod(hour, 24)
            rows = self._day_table(day)[:, h * 60 : h * 60 + 60].T.copy()
            self._hours[hour] = rows
            if len(self._hours) > 4:
                self._hours.popitem(last=False)
        return rows

    def _day_level(self, day: int) -> float:
        """Log-price deviation at the start of `day`: an AR(1) of daily shocks, evaluated
        over the last `_WINDOW` shocks so that each day is computed on its own."""
        cached = self._levels.get(day)
        if cached is None:
            lo = day - _WINDOW
            blocks = range(lo // _DAY_BLOCK, (day - 1) // _DAY_BLOCK + 1)
            shocks = np.concatenate([self._shocks(b) for b in blocks])
            offset = lo - blocks[0] * _DAY_BLOCK
            window = shocks[offset : offset + _WINDOW][::-1]
            cached = float(np.sum(window * _DECAY)) * _DAY_SIGMA
            self._levels[day] = cached
            if len(self._levels) > 4096:
                self._levels.popitem(last=False)
        return cached

    def _shocks(self, block: int) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Standard-normal daily shocks of days block*_DAY_BLOCK onward."""
        cached = self._shock_blocks.get(block)
        if cached is None:
            seq = np.random.SeedSequence([self._key, 2, block + 2**20])
            cached = np.random.Generator(np.random.PCG64(seq)).standard_normal(_DAY_BLOCK)
            self._shock_blocks[block] = cached
            if len(self._shock_blocks) > 8:
                self._shock_blocks.popitem(last=False)
        return cached

    def _price(self, x: float) -> int:
        ticks = round(self._level * math.exp(x) * SCALE / self._tick)
        return max(1, ticks) * self._tick

    def _day_table(self, day: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        """The 1440 minutes of one day as a (9, 1440) int table: o, h, l, c, v, q, n, V, Q.

        Vectorised; every value is an integral float64 below 2**53 before the cast, so the
        result is exact and identical on every call. Recent tables are shared by all sources.
        """
        cache_key = (self._key, day)
        cached = _DAY_TABLES.get(cache_key)
        if cached is not None:
            return cached
        table = self._make_day_table(day)
        _DAY_TABLES[cache_key] = table
        if len(_DAY_TABLES) > 32:
            _DAY_TABLES.popitem(last=False)
        return table

    def _make_day_table(self, day: int) -> np.ndarray[Any, np.dtype[np.int64]]:
        x0, x1 = self._day_level(day), self._day_level(day + 1)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self._key, 1, day])))
        z = rng.standard_normal((4, 1440))
        u = rng.random((3, 1440))
        walk = np.cumsum(z[0] * _MINUTE_SIGMA)
        k = np.arange(1, 1441) / 1440.0
        path = x0 + walk + k * (x1 - x0 - walk[-1])
        tick, vtick = float(self._tick), float(self._vtick)
        closes = np.maximum(1.0, np.rint(np.exp(path) * (self._level * SCALE / tick))) * tick
        closes[-1] = self._price(x1)  # exactly the price the next day opens at
        opens = np.concatenate(([float(self._price(x0))], closes[:-1]))
        spread = _MINUTE_SIGMA * 0.7
        highs = np.ceil(np.maximum(opens, closes) * np.exp(np.abs(z[1]) * spread) / tick) * tick
        lows = np.floor(np.minimum(opens, closes) * np.exp(-np.abs(z[2]) * spread) / tick) * tick
        lows = np.maximum(lows, tick)
        move = np.minimum(np.abs(closes - opens) / opens / _MINUTE_SIGMA, 5.0)
        coins = self._coins_per_minute * np.exp(np.clip(z[3], -4.0, 4.0) * 0.5) * (0.6 + 0.4 * move)
        volume = np.maximum(vtick, np.rint(coins * (SCALE / vtick)) * vtick)
        vwap = lows + np.floor((highs - lows) * (0.25 + 0.5 * u[0]))
        quote = np.maximum(1.0, np.floor(volume * vwap / SCALE))
        trade_size = SCALE * self._quote_per_trade
        trades = np.maximum(1.0, np.floor(quote / trade_size * (0.7 + 0.6 * u[1])))
        share = 0.25 + 0.5 * u[2]
        taker_base = np.floor(volume * share / vtick) * vtick
        taker_quote = np.floor(quote * share)
        return np.stack(
            [opens, highs, lows, closes, volume, quote, trades, taker_base, taker_quote]
        ).astype(np.int64)

    def _hour_agg(self, hour_ms: int) -> Bar:
        """Aggregate of the hour opening at hour_ms (all 24 of its day are cached at once)."""
        cached = self._hour_aggs.get(hour_ms)
        if cached is not None:
            return cached
        day = (hour_ms - ORIGIN_MS) // DAY_MS
        t0 = ORIGIN_MS + day * DAY_MS
        cube = self._day_table(day).reshape(9, 24, 60)
        columns = [
            cube[0, :, 0].tolist(),
            cube[1].max(axis=1).tolist(),
            cube[2].min(axis=1).tolist(),
            cube[3, :, -1].tolist(),
            *cube[4:].sum(axis=2).tolist(),
        ]
        for h, values in enumerate(zip(*columns, strict=True)):
            t = t0 + h * HOUR_MS
            self._hour_aggs[t] = Bar(t, t + HOUR_MS - 1, *values)
        while len(self._hour_aggs) > 50_000:
            self._hour_aggs.popitem(last=False)
        return self._hour_aggs[hour_ms]
