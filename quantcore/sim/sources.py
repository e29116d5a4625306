"""History sources: closed bars of one symbol at a native interval, addressable by time.

`KlineSource` is the contract the market plays from; `ReplaySource` serves bars loaded
from data files (:mod:`.formats`), `sparse` makes one quiet, and `sources_from_specs`
turns ``--data`` arguments into sources. The synthetic market is :mod:`.generator`.
"""

from __future__ import annotations

import bisect
import itertools
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from .formats import DataFileError, detect_symbol, load_klines, load_klines_by_symbol
from .klines import Bar, Kline, aggregate_bars, bucket_start, interval_name
from .realism import stable_hash


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


def seeded(*parts: object) -> random.Random:
    """An RNG whose stream depends only on `parts` (stable across runs and processes)."""
    return random.Random(stable_hash(*parts))


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
    rng = seeded("sparse", seed, source.symbol, max_run)
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
