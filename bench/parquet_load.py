"""The research store: one year of 1m bars loaded from Parquet vs ``pandas.read_csv``.

One symbol, 525,600 bars of 2023 from the local exchange's seeded generator, recorded
through the ParquetRecorder and the CsvRecorder (the same closed bars, as the codec
builds them). Then, in the same run:

- ``quantcore.load`` from the Parquet store against ``pandas.read_csv`` of the same CSV
  (alternating rounds, best of each; target: at least 10x faster), after checking the
  loaded frame equals the HistoryStore's frame of the same bars;
- disk bytes per bar of both;
- process CPU per bar (``time.process_time``) of each recorder at live-like rates: the
  same bars handed to both one at a time, taking turns (who goes first alternating), with
  a pause before each call (a cold cache, as live), plus the Parquet recorder's month
  compactions and its year merge spread over the bars (target: within the CSV recorder's);
- for comparison, the same year as a year in progress keeps it (twelve month files).

Run: python bench/parquet_load.py [--bars 525600] [--live-sample 3000] [--rounds 5]
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from _common import Reporter, best_and_median, median, parser

import quantcore
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.consumers.history import HistoryStore
from quantcore.events import BarDecimals, BarEvent
from quantcore.sim.generator import RandomWalkSource
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout
from quantcore.sinks.parquet import ParquetRecorder

SYMBOL, INTERVAL = "BTCUSDT", "1m"
START = datetime(2023, 1, 1, tzinfo=UTC)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def year_of_bars(count: int) -> list[BarEvent]:
    """``count`` closed 1m bars from 2023-01-01, as the codec builds them from the frames."""
    start_ms = int(START.timestamp() * 1000)
    source = RandomWalkSource(SYMBOL, INTERVAL, seed=1)
    bars = []
    for kline in (bar.kline() for bar in source.bars(start_ms, start_ms + count * 60_000)):
        k = kline
        d = BarDecimals(k.open, k.high, k.low, k.close, k.volume, k.quote_volume,
                        k.taker_buy_base, k.taker_buy_quote)  # fmt: skip
        opened = _EPOCH + timedelta(milliseconds=k.open_time)
        closed = _EPOCH + timedelta(milliseconds=k.close_time)
        floats = [float(text) for text in _values(d)]
        o, h, lo, c, v, q, tv, tq = floats
        event = closed + timedelta(milliseconds=1)
        bar = BarEvent(SYMBOL, INTERVAL, opened, closed, o, h, lo, c, v, q, k.trades, tv, tq,
                       True, event, 0, d)  # fmt: skip
        bars.append(bar)
    return bars


def _values(d: BarDecimals) -> tuple[str, ...]:
    return (d.open, d.high, d.low, d.close, d.volume, d.quote_volume, d.taker_buy_volume,
            d.taker_buy_quote_volume)  # fmt: skip


def live_cpu_per_bar(
    first: Callable[[BarEvent], None], second: Callable[[BarEvent], None], bars: list[BarEvent]
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(mean, median) process CPU (µs, ``time.process_time``) of one call of each
    recorder's ``on_bar``, each after a 1 ms pause (live-like: caches cold again), the two
    taking turns bar by bar, and which goes first alternating, so both see the same load."""
    samples: tuple[list[float], list[float]] = ([], [])
    turns = (
        ((first, samples[0]), (second, samples[1])),
        ((second, samples[1]), (first, samples[0])),
    )
    for n, bar in enumerate(bars):
        for on_bar, own in turns[n % 2]:
            time.sleep(0.001)
            start = time.process_time_ns()
            on_bar(bar)
            own.append((time.process_time_ns() - start) / 1000)
    first_cpu, second_cpu = samples
    return (statistics.fmean(first_cpu), median(first_cpu)), (
        statistics.fmean(second_cpu),
        median(second_cpu),
    )


def same_as_history(frame: pd.DataFrame, bars: list[BarEvent]) -> None:
    """The loaded frame holds exactly the HistoryStore's frame of the same bars."""
    history = HistoryStore()
    for bar in bars:
        history.on_bar(bar)
    expected = history.frame(SYMBOL, INTERVAL)
    assert list(frame.columns) == list(expected.columns), frame.columns
    assert frame.dtypes.equals(expected.dtypes), frame.dtypes
    for name in expected.columns:
        assert np.array_equal(frame[name].to_numpy(), expected[name].to_numpy()), name


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=525_600)
    p.add_argument("--live-sample", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=5, help="alternating load/read_csv timings")
    args = p.parse_args()
    report = Reporter("parquet_load", args.results)
    bars = year_of_bars(args.bars)
    report.note(f"{len(bars):,} bars of {SYMBOL} {INTERVAL} from {bars[0].open_time:%Y-%m-%d}")

    with tempfile.TemporaryDirectory(prefix="qc-parquet-") as tmp:
        folder = Path(tmp)
        csv_path = folder / f"{SYMBOL}_{INTERVAL}.csv"
        csv = CsvRecorder(path=str(folder / "{symbol}_{interval}.csv"))
        store = ParquetRecorder(root=str(folder / "store"))
        sample = args.live_sample
        (csv_live, csv_median), (parquet_live, parquet_median) = live_cpu_per_bar(
            csv.on_bar, store.on_bar, bars[:sample]
        )
        for bar in bars[sample:]:
            csv.on_bar(bar)
            store.on_bar(bar)
        await csv.stop()
        await store.stop()

        # Compaction, timed alone: every month's journal compacted into its file again,
        # then the twelve month files merged into the year's file.
        again = folder / "again"
        stream = layout.stream_dir(again, store.venue, SYMBOL, INTERVAL)
        by_month: dict[layout.Part, list[bytes]] = {}
        for bar in bars:
            part = layout.month_of(stream, bar.open_time_ms)
            by_month.setdefault(part, []).append(fmt.journal_line(bar, bar.open_time_ms))
        compact_cpu = 0.0
        for part, lines in by_month.items():
            part.folder.mkdir(parents=True, exist_ok=True)
            part.journal.write_bytes(b"".join(lines))
            start = time.process_time()
            assert layout.compact_month(part) == len(lines)
            compact_cpu += time.process_time() - start
        start = time.process_time()
        years = {part.year for part in by_month}
        merged = sum(layout.compact_year(stream / f"year={y:04d}", y) for y in years)
        merge_cpu = time.process_time() - start
        assert merged == len(by_month)
        months_root = folder / "months"  # the same year, kept as a year in progress keeps it
        months_stream = layout.stream_dir(months_root, store.venue, SYMBOL, INTERVAL)
        months_stream.mkdir(parents=True)
        (months_root / fmt.MARKER).write_bytes((folder / "store" / fmt.MARKER).read_bytes())
        for part, lines in by_month.items():
            target = layout.Part(months_stream / part.folder.name, part.year, part.month)
            target.folder.mkdir(parents=True, exist_ok=True)
            target.journal.write_bytes(b"".join(lines))
            layout.compact_month(target)
        compaction = (compact_cpu + merge_cpu) / len(bars) * 1e6
        parquet_total = parquet_live + compaction
        report.note(
            f"per-bar CPU over {sample:,} bars, mean (median): CsvRecorder {csv_live:.1f} "
            f"({csv_median:.1f}) µs, ParquetRecorder journal append {parquet_live:.1f} "
            f"({parquet_median:.1f}) µs; month compactions {compact_cpu / len(bars) * 1e6:.1f} "
            f"µs and the year merge {merge_cpu / len(bars) * 1e6:.1f} µs a bar"
        )
        report.add("CsvRecorder CPU per bar (live-like, mean)", f"{csv_live:.1f} µs")
        report.add(
            "ParquetRecorder CPU per bar (live-like, mean journal append + compaction share)",
            f"{parquet_total:.1f} µs ({parquet_live:.1f} + {compaction:.1f})",
            baseline=f"CsvRecorder {csv_live:.1f} µs",
            ratio=f"{parquet_total / csv_live:.2f}x",
            target="<= CSV recorder",
            met=parquet_total <= csv_live,
        )

        same_as_history(quantcore.load(SYMBOL, INTERVAL, source=folder / "store"), bars)
        report.note("quantcore.load's frame equals the HistoryStore's frame of the same bars")
        # The timings below start from a clean heap: the year of BarEvents is dropped.
        count = len(bars)
        del bars, by_month
        gc.collect()

        def time_parquet() -> float:
            start = time.perf_counter()
            frame = quantcore.load(SYMBOL, INTERVAL, source=folder / "store")
            assert len(frame) == count
            return time.perf_counter() - start

        def time_csv() -> float:
            start = time.perf_counter()
            frame = pd.read_csv(csv_path)
            assert len(frame) == count
            return time.perf_counter() - start

        loaded = quantcore.load(SYMBOL, INTERVAL, source=folder / "store")
        files = sorted(p.name for p in (folder / "store").rglob("*.parquet"))
        report.note(f"the store holds the closed year as {files}")

        def time_floor() -> float:
            """Copying the frame's columns once: what a loader that copies must at least do."""
            start = time.perf_counter()
            copies = [loaded[name].to_numpy().copy() for name in loaded.columns]
            assert len(copies[0]) == count
            return time.perf_counter() - start

        def time_months() -> float:
            start = time.perf_counter()
            assert len(quantcore.load(SYMBOL, INTERVAL, source=months_root)) == count
            return time.perf_counter() - start

        # Alternating rounds, so all see the same machine load; best of each.
        rounds = [(time_parquet(), time_csv()) for _ in range(args.rounds)]
        floor = min(time_floor() for _ in range(args.rounds))
        months_best = min(time_months() for _ in range(args.rounds))
        parquet_best = min(p for p, _ in rounds)
        csv_best = min(c for _, c in rounds)
        ratio = csv_best / parquet_best
        report.note(
            f"{args.rounds} alternating rounds: quantcore.load median "
            f"{median([p for p, _ in rounds]) * 1000:.0f} ms, pandas.read_csv median "
            f"{median([c for _, c in rounds]) * 1000:.0f} ms"
        )
        report.add(
            f"quantcore.load from Parquet, {count:,} bars",
            f"{parquet_best * 1000:.0f} ms",
            baseline=f"pandas.read_csv {csv_best * 1000:.0f} ms",
            ratio=f"{ratio:.1f}x faster",
            target=">= 10x faster",
            met=ratio >= 10,
        )
        report.note(
            f"floor, one copy of the frame's {loaded.memory_usage().sum() / 1e6:.0f} MB: "
            f"{floor * 1000:.1f} ms (read_csv / floor {csv_best / floor:.1f}x); the same "
            f"year as a year in progress keeps it, twelve month files: {months_best * 1000:.0f} "
            f"ms (read_csv / that {csv_best / months_best:.1f}x)"
        )
        exact_best, _ = best_and_median(
            lambda: _timed(lambda: quantcore.load(SYMBOL, INTERVAL, source=folder / "store",
                                                  exact=True)), 1)  # fmt: skip
        report.add("quantcore.load(exact=True) from Parquet", f"{exact_best * 1000:.0f} ms")
        store_bytes = folder_bytes(folder / "store")
        csv_bytes = csv_path.stat().st_size
        report.add(
            "disk bytes per bar, Parquet store (all 14 fields)",
            f"{store_bytes / count:.1f} B",
            baseline=f"CSV (7 fields) {csv_bytes / count:.1f} B",
            ratio=f"{store_bytes / csv_bytes:.2f}x",
        )
    report.save()


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


if __name__ == "__main__":
    asyncio.run(main())
