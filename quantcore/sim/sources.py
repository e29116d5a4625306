"""History sources: closed bars of one symbol at a native interval, addressable by time.

`ReplaySource` serves bars loaded from real data files (`load_klines`); `RandomWalkSource`
computes a deterministic synthetic market whose every bar is a pure function of time.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import itertools
import math
import random
import re
from abc import ABC, abstractmethod
from collections import Counter, OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .klines import (
    DAY_MS,
    HOUR_MS,
    MINUTE_MS,
    SCALE,
    Bar,
    Kline,
    aggregate_bars,
    bucket_start,
    interval_ms,
    interval_name,
    merge,
    to_units,
)

ORIGIN_MS = 1_483_228_800_000
"""2017-01-01 00:00 UTC: the first bar a `RandomWalkSource` has (what `startTime=0` finds)."""

_QUOTES = ("USDT", "FDUSD", "USDC", "BUSD", "TUSD", "BTC", "ETH", "BNB", "EUR", "TRY", "DAI")


class DataFileError(ValueError):
    """A data file cannot be used; the message is one line naming file, line and problem."""


class KlineSource(ABC):
    """Closed bars of one symbol at its native interval (the contract the market relies on)."""

    symbol: str
    interval: str
    interval_ms: int

    @property
    @abstractmethod
    def first_open_ms(self) -> int:
        """Open time of the earliest bar."""

    @property
    @abstractmethod
    def end_ms(self) -> int | None:
        """Exclusive bound on bar open times (last open + interval); None when unbounded."""

    @abstractmethod
    def bars(self, start_ms: int, end_ms: int) -> list[Bar]:
        """Native bars with start_ms <= open_time < end_ms, oldest first."""

    @abstractmethod
    def next_open_ms(self, t_ms: int) -> int | None:
        """Open time of the first bar opening at or after t_ms, None when there is none."""

    def bar(self, open_ms: int) -> Bar | None:
        """The bar opening exactly at open_ms, if any."""
        found = self.bars(open_ms, open_ms + 1)
        return found[0] if found else None

    def aggregated(self, length_ms: int, start_ms: int, end_ms: int) -> list[Bar]:
        """Bars of `length_ms` (a multiple of the native interval) for buckets in [start, end)."""
        if length_ms == self.interval_ms:
            return self.bars(start_ms, end_ms)
        lo = bucket_start(start_ms, length_ms)
        if lo < start_ms:
            lo += length_ms
        return aggregate_bars(self.bars(lo, end_ms), length_ms)

    def klines(self, start_ms: int | None = None, end_ms: int | None = None) -> list[Kline]:
        """Public-form bars in [start_ms, end_ms) (defaults: from the first, to the last)."""
        lo = self.first_open_ms if start_ms is None else start_ms
        hi = end_ms if end_ms is not None else self.end_ms
        if hi is None:
            raise ValueError("an unbounded source needs end_ms")
        return [bar.kline() for bar in self.bars(lo, hi)]


class ReplaySource(KlineSource):
    """Bars from a recorded file (or any list of klines), served exactly as given."""

    def __init__(self, symbol: str, klines: Sequence[Kline | Bar]) -> None:
        if not klines:
            raise ValueError(f"no klines for {symbol}")
        bars = [k.units() if isinstance(k, Kline) else k for k in klines]
        length = bars[0].close_time - bars[0].open_time + 1
        self.symbol = symbol.upper()
        self.interval = interval_name(length)
        self.interval_ms = length
        for prev, bar in itertools.pairwise(bars):
            if bar.open_time <= prev.open_time:
                raise ValueError(f"{symbol}: klines not strictly ordered at {bar.open_time}")
            if bar.close_time - bar.open_time + 1 != length:
                raise ValueError(f"{symbol}: mixed intervals at {bar.open_time}")
        self._bars = bars
        self._opens = [bar.open_time for bar in bars]

    @classmethod
    def from_file(cls, path: str | Path, symbol: str | None = None) -> ReplaySource:
        """Load a data file (see `load_klines`); the symbol comes from the file if not given."""
        name = symbol or detect_symbol(path)
        if name is None:
            raise DataFileError(f"{path}: cannot tell the symbol; name it as SYMBOL=FILE")
        return cls(name, load_klines(path, name if symbol else None))

    @property
    def first_open_ms(self) -> int:
        return self._opens[0]

    @property
    def end_ms(self) -> int:
        return self._opens[-1] + self.interval_ms

    def __len__(self) -> int:
        return len(self._bars)

    def bars(self, start_ms: int, end_ms: int) -> list[Bar]:
        i = bisect.bisect_left(self._opens, start_ms)
        j = bisect.bisect_left(self._opens, end_ms, i)
        return self._bars[i:j]

    def bar(self, open_ms: int) -> Bar | None:
        i = bisect.bisect_left(self._opens, open_ms)
        if i < len(self._opens) and self._opens[i] == open_ms:
            return self._bars[i]
        return None

    def next_open_ms(self, t_ms: int) -> int | None:
        i = bisect.bisect_left(self._opens, t_ms)
        return self._opens[i] if i < len(self._opens) else None


# ---------------------------------------------------------------- synthetic random walk

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


def _seeded(*parts: object) -> random.Random:
    """An RNG whose stream depends only on `parts` (stable across runs and processes)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


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
        key = hashlib.blake2b(repr((seed, self.symbol)).encode(), digest_size=8).digest()
        self._key = int.from_bytes(key, "big")
        u = _seeded("level", self.symbol).random()
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
            found = self.bars(open_ms, open_ms + 1)
            return found[0] if found else None
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
            out.extend(
                Bar(t, t + MINUTE_MS - 1, *values)
                for t, values in zip(
                    range(lo, lo + len(rows) * MINUTE_MS, MINUTE_MS), rows, strict=True
                )
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


# ---------------------------------------------------------------- data files


def detect_symbol(path: str | Path) -> str | None:
    """Symbol of a data file: the `s` of its first WS kline frame, else a token in its name."""
    p = Path(path)
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        try:
            with p.open("rb") as fh:
                for raw in fh:
                    frame = _kline_payload(orjson.loads(raw))
                    if frame is not None and isinstance(frame.get("s"), str):
                        return str(frame["s"]).upper()
        except (OSError, orjson.JSONDecodeError):
            return None
    for token in re.split(r"[^A-Za-z0-9]+", p.stem):
        if token.isupper() and token.endswith(_QUOTES) and len(token) > 4:
            return token
    return None


def load_klines(path: str | Path, symbol: str | None = None) -> list[Kline]:
    """Closed klines of one symbol from a Binance data file, oldest first, deduplicated.

    Formats (sniffed from content): REST array JSON; JSONL of WS kline frames (only `x:true`
    kept; `symbol` picks one when several are present); CSV with the 12 kline columns (ms or
    ISO times) or with 6 `timestamp,open,high,low,close,volume` columns. Rows repeating an
    open_time are replaced by the later row (page overlaps, in-progress then final). For
    6-column files quote_volume is derived as volume*close rounded to 8 dp; trades and taker
    volumes are 0.
    """
    by_symbol = _load(Path(path))
    if len(by_symbol) == 1 and (symbol is None or None in by_symbol):
        return next(iter(by_symbol.values()))
    if symbol is None:
        names = ", ".join(sorted(str(s) for s in by_symbol))
        raise DataFileError(f"{path}: holds several symbols ({names}); pick one")
    found = by_symbol.get(symbol.upper())
    if found is None:
        raise DataFileError(f"{path}: no closed klines for {symbol.upper()}")
    return found


def load_klines_by_symbol(path: str | Path) -> dict[str, list[Kline]]:
    """Every symbol's klines in a file; symbols of single-symbol files come from the name."""
    by_symbol = _load(Path(path))
    out: dict[str, list[Kline]] = {}
    for name, klines in by_symbol.items():
        if name is None:
            detected = detect_symbol(path)
            if detected is None:
                raise DataFileError(f"{path}: cannot tell the symbol; name it as SYMBOL=FILE")
            name = detected
        out[name] = klines
    return out


def _load(path: Path) -> dict[str | None, list[Kline]]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    head = data.lstrip()[:1]
    if head == b"[":
        rows = _rest_rows(path, data)
        return {None: _finish(path, rows, None)}
    if head == b"{":
        return _jsonl_rows(path, data)
    if not head:
        raise DataFileError(f"{path}: file is empty")
    return {None: _csv_rows(path, data)}


Row = tuple[int, Bar]  # (line or row number, bar)


def _finish(path: Path, rows: list[Row], length: int | None) -> list[Kline]:
    """Validate, deduplicate (later row wins) and order parsed rows."""
    if not rows:
        raise DataFileError(f"{path}: no closed klines found")
    latest: dict[int, Row] = {}
    for line, bar in rows:
        latest[bar.open_time] = (line, bar)
    ordered = [latest[t] for t in sorted(latest)]
    expected = (
        length if length is not None else ordered[0][1].close_time - ordered[0][1].open_time + 1
    )
    try:
        interval_name(expected)
    except ValueError:
        raise DataFileError(
            f"{path}:{ordered[0][0]}: bar length {expected} ms is not a Binance interval"
        ) from None
    out: list[Kline] = []
    for line, bar in ordered:
        problem = bar.problem()
        if problem is None and bar.close_time - bar.open_time + 1 != expected:
            problem = f"bar length {bar.close_time - bar.open_time + 1} ms, expected {expected}"
        if problem is None and bar.open_time % 1000:
            problem = f"open_time {bar.open_time} is not on a whole second"
        if problem is not None:
            raise DataFileError(f"{path}:{line}: {problem}")
        out.append(bar.kline())
    return out


def _rest_rows(path: Path, data: bytes) -> list[Row]:
    try:
        parsed = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise DataFileError(f"{path}: invalid JSON: {exc}") from None
    if not isinstance(parsed, list):
        raise DataFileError(f"{path}: expected a JSON array of kline arrays")
    rows: list[Row] = []
    for i, item in enumerate(parsed, 1):
        if not isinstance(item, list) or len(item) < 11:
            raise DataFileError(f"{path}: row {i}: expected a 12-field kline array")
        try:
            rows.append((i, Bar.from_fields(item)))
        except ValueError as exc:
            raise DataFileError(f"{path}: row {i}: {exc}") from None
    return rows


def _kline_payload(frame: Any) -> dict[str, Any] | None:
    """The `k` object of a raw or combined WS kline frame, else None."""
    if isinstance(frame, dict) and isinstance(frame.get("data"), dict):
        frame = frame["data"]
    if isinstance(frame, dict) and frame.get("e") == "kline" and isinstance(frame.get("k"), dict):
        return frame["k"]  # type: ignore[no-any-return]
    return None


def _jsonl_rows(path: Path, data: bytes) -> dict[str | None, list[Kline]]:
    rows: dict[str, list[Row]] = {}
    intervals: dict[str, str] = {}
    for line_no, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            k = _kline_payload(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            raise DataFileError(f"{path}:{line_no}: invalid JSON: {exc}") from None
        if k is None or k.get("x") is not True:
            continue
        try:
            symbol = str(k["s"]).upper()
            fields = [k["t"], k["o"], k["h"], k["l"], k["c"], k["v"], k["T"], k["q"], k["n"]]
            bar = Bar.from_fields([*fields, k["V"], k["Q"]])
            interval = str(k["i"])
        except (KeyError, ValueError) as exc:
            raise DataFileError(f"{path}:{line_no}: bad kline frame: {exc}") from None
        if intervals.setdefault(symbol, interval) != interval:
            raise DataFileError(f"{path}:{line_no}: {symbol} mixes intervals")
        rows.setdefault(symbol, []).append((line_no, bar))
    if not rows:
        raise DataFileError(f"{path}: no closed (x:true) kline frames found")
    return {s: _finish(path, r, interval_ms(intervals[s])) for s, r in rows.items()}


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COLUMNS = {
    "open_time": ("open_time", "opentime", "open time", "timestamp", "time", "date", "datetime"),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c"),
    "volume": ("volume", "v", "vol"),
    "close_time": ("close_time", "closetime", "close time"),
    "quote_volume": ("quote_volume", "quote_asset_volume", "quote asset volume", "quotevolume"),
    "trades": ("trades", "trade_count", "number_of_trades", "count", "num_trades"),
    "taker_base": ("taker_buy_base", "taker_buy_base_asset_volume", "taker_buy_volume"),
    "taker_quote": ("taker_buy_quote", "taker_buy_quote_asset_volume", "taker_buy_quote_volume"),
}
_POSITIONAL_12 = [
    "open_time",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "close_time",
    "quote_volume",
    "trades",
    "taker_base",
    "taker_quote",
]


def _parse_time(text: str) -> int:
    """Epoch ms from an integer (s, ms or us, by magnitude) or an ISO-8601 timestamp."""
    stripped = text.strip()
    if stripped.isdigit():
        value = int(stripped)
        if value >= 10**14:
            return value // 1000
        return value * 1000 if value < 10**11 else value
    try:
        moment = datetime.fromisoformat(stripped)
    except ValueError:
        raise ValueError(f"not a timestamp: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _parse_count(text: str) -> int:
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"not a trade count: {text!r}") from None
    if value != value.to_integral_value() or value < 0:
        raise ValueError(f"not a trade count: {text!r}")
    return int(value)


def _csv_rows(path: Path, data: bytes) -> list[Kline]:
    lines = data.decode("utf-8-sig", errors="replace").splitlines()
    reader = csv.reader(lines)
    first = next(reader)
    if first and first[0].strip().isdigit():
        names = _POSITIONAL_12 if len(first) >= 11 else _POSITIONAL_12[:6]
        columns = {name: i for i, name in enumerate(names)}
        body_start = 1
    else:
        columns = {}
        header = [h.strip().lower() for h in first]
        for key, aliases in _COLUMNS.items():
            for i, name in enumerate(header):
                if name in aliases:
                    columns[key] = i
                    break
        missing = [
            k for k in ("open_time", "open", "high", "low", "close", "volume") if k not in columns
        ]
        if missing:
            raise DataFileError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
        body_start = 2
    full = all(k in columns for k in _POSITIONAL_12)
    width = max(columns.values()) + 1
    parsed: list[tuple[int, int, int | None, list[int]]] = []
    rows_iter = reader if body_start == 2 else csv.reader(lines)
    for line_no, cells in enumerate(rows_iter, body_start):
        if not cells or not any(c.strip() for c in cells):
            continue
        if len(cells) < width:
            raise DataFileError(f"{path}:{line_no}: expected {width} columns, got {len(cells)}")
        try:
            t = _parse_time(cells[columns["open_time"]])
            close_t = _parse_time(cells[columns["close_time"]]) if full else None
            nums = [to_units(cells[columns[k]]) for k in ("open", "high", "low", "close", "volume")]
            if full:
                nums += [
                    to_units(cells[columns["quote_volume"]]),
                    _parse_count(cells[columns["trades"]]),
                    to_units(cells[columns["taker_base"]]),
                    to_units(cells[columns["taker_quote"]]),
                ]
        except ValueError as exc:
            raise DataFileError(f"{path}:{line_no}: {exc}") from None
        parsed.append((line_no, t, close_t, nums))
    if not parsed:
        raise DataFileError(f"{path}: no kline rows found")
    length = None if full else _infer_length(path, [p[1] for p in parsed])
    rows: list[Row] = []
    for line_no, t, close_t, nums in parsed:
        o, h, lo, c, v = nums[:5]
        if close_t is not None:
            q, n, tb, tq = nums[5:]
            rows.append((line_no, Bar(t, close_t, o, h, lo, c, v, q, n, tb, tq)))
        else:
            assert length is not None
            quote = (v * c + SCALE // 2) // SCALE
            rows.append((line_no, Bar(t, t + length - 1, o, h, lo, c, v, quote, 0, 0, 0)))
    return _finish(path, rows, length)


def _infer_length(path: Path, opens: list[int]) -> int:
    """Interval of a file without close times: the most common gap between open times."""
    unique = sorted(set(opens))
    gaps = Counter(b - a for a, b in itertools.pairwise(unique))
    if not gaps:
        return MINUTE_MS
    length = gaps.most_common(1)[0][0]
    try:
        interval_name(length)
    except ValueError:
        raise DataFileError(f"{path}: rows are {length} ms apart, not a Binance interval") from None
    return length


def sparse(source: KlineSource, fraction: float, seed: int, max_run: int = 8) -> ReplaySource:
    """A copy of a bounded source where a seeded `fraction` of bars, in runs of 1..max_run,
    became zero-trade bars (o=h=l=c=previous close, volumes and trades 0), like the quiet
    minutes of an illiquid symbol. Runs never touch, so no quiet stretch exceeds max_run (a
    fraction too high to place that way yields fewer bars); the first bar is never zeroed.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    if max_run < 1:
        raise ValueError(f"max_run must be >= 1, got {max_run}")
    end = source.end_ms
    if end is None:
        raise ValueError(f"{source.symbol}: sparse() needs a bounded source (a replay)")
    bars = source.bars(source.first_open_ms, end)
    target = round(fraction * (len(bars) - 1))
    rng = _seeded("sparse", seed, source.symbol, max_run)
    quiet: set[int] = set()
    for _ in range(50 * len(bars)):
        if len(quiet) >= target:
            break
        start = rng.randrange(1, len(bars))
        stop = min(start + rng.randint(1, max_run), len(bars), start + target - len(quiet))
        if not quiet.intersection(range(start - 1, stop + 1)):  # runs never touch
            quiet.update(range(start, stop))
    out = [bars[0]]
    for i, bar in enumerate(bars[1:], 1):
        if i in quiet:
            price = out[-1].close
            bar = Bar(bar.open_time, bar.close_time, price, price, price, price, 0, 0, 0, 0, 0)
        out.append(bar)
    return ReplaySource(source.symbol, out)


__all__ = [
    "ORIGIN_MS",
    "DataFileError",
    "KlineSource",
    "RandomWalkSource",
    "ReplaySource",
    "detect_symbol",
    "load_klines",
    "load_klines_by_symbol",
    "sparse",
]


def sources_from_specs(data: list[str]) -> list[KlineSource]:
    """Replay sources from ``[SYMBOL=]FILE`` specs (CLI ``--data``, YAML ``exchange.local.data``);
    without ``SYMBOL=`` every symbol found in the file gets its own source."""
    sources: dict[str, KlineSource] = {}
    for item in data:
        symbol, sep, path = item.partition("=")
        if not sep:
            symbol, path = "", item
        if symbol:
            found = [ReplaySource.from_file(path, symbol.upper())]
        else:
            found = [ReplaySource(n, k) for n, k in load_klines_by_symbol(path).items()]
        for source in found:
            if source.symbol in sources:
                raise ValueError(f"{path}: {source.symbol} already comes from another --data file")
            sources[source.symbol] = source
    return list(sources.values())
