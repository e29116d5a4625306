"""Growing history: HistoryStore + CsvRecorder vs the naive pandas append, 10k to 1M bars.

The naive way (``pd.concat`` of a one-row DataFrame plus ``to_csv(mode="a")`` per bar)
copies the whole frame on every bar, so its cost per bar grows with the history. It runs
in full while it fits a time box; beyond that its per-bar cost is sampled at the larger
sizes and integrated, and the output says which figures are estimated.

Run: python bench/history_growth.py [--sizes 10000,100000,1000000] [--naive-budget S]
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from _common import Reporter, load_average, parser
from msgspec.structs import replace

from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.consumers.history import COLUMNS, HistoryStore
from quantcore.events import BarDecimals, BarEvent

SYMBOL, INTERVAL = "BTCUSDT", "1m"
T0 = datetime(2017, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def make_bars(start: int, count: int) -> Iterator[BarEvent]:
    """Closed 1m bars with distinct, realistic-looking values and their exchange-style
    8-decimal strings, as the codec makes them (cheap to make)."""
    for i in range(start, start + count):
        open_time = T0 + i * MINUTE
        base = 60_000.0 + (i % 9_973) * 0.01
        values = (base, base + 12.5, base - 7.25, base + 3.01, 11.02444 + i % 97, 624_782.95 + i,
                  2.24261, 127_055.798)  # fmt: skip
        o, h, lo, c, v, q, tv, tq = (f"{x:.8f}" for x in values)
        yield BarEvent(
            SYMBOL, INTERVAL, open_time, open_time + MINUTE - timedelta(milliseconds=1),
            *map(float, (o, h, lo, c, v, q)), 1425, float(tv), float(tq), True,
            open_time + MINUTE, 0, BarDecimals(o, h, lo, c, v, q, tv, tq),
        )  # fmt: skip


def row(bar: BarEvent) -> tuple[float, float, float, float, float, float, datetime]:
    return (bar.close, bar.high, bar.low, bar.open, bar.volume, bar.quote_volume, bar.open_time)


# -- quantcore -------------------------------------------------------------------------------


def quantcore_run(bars: Sequence[BarEvent], tmp: str) -> tuple[float, float, float, HistoryStore]:
    """Seconds to append ``bars`` to the store, to a fresh CSV, and to read the frame."""
    store = HistoryStore()
    folder = tempfile.mkdtemp(dir=tmp)
    recorder = CsvRecorder(path=f"{folder}/{{symbol}}_{{interval}}.csv")
    gc.collect()
    on_bar = store.on_bar
    t = time.perf_counter()
    for bar in bars:
        on_bar(bar)
    store_s = time.perf_counter() - t
    write = recorder.on_bar
    t = time.perf_counter()
    for bar in bars:
        write(bar)
    csv_s = time.perf_counter() - t
    t = time.perf_counter()
    frame = store.frame(SYMBOL, INTERVAL)
    read_s = time.perf_counter() - t
    asyncio.run(recorder.stop())
    if len(frame) != len(bars) or recorder.rows_written != len(bars):
        raise RuntimeError(f"stored {len(frame)}, wrote {recorder.rows_written} of {len(bars)}")
    return store_s, csv_s, read_s, store


def store_memory(bars: Sequence[BarEvent], read: bool = True) -> tuple[int, int, int]:
    """Traced bytes held by a store of ``bars`` (with its frame read if ``read``), the peak
    while appending, and what a DataFrame of the same rows reports with
    ``memory_usage(deep=True)``. The bars exist before tracing starts, so only what the
    store allocates is counted."""
    gc.collect()
    tracemalloc.start()
    try:
        store = HistoryStore()
        for bar in bars:
            store.on_bar(bar)
        if read:
            store.frame(SYMBOL, INTERVAL)
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    symbol = bars[0].symbol
    frame = store.frame(symbol, INTERVAL)
    per_row = frame.memory_usage(deep=True).sum() / len(frame)
    return held, peak, round(per_row * len(bars))


def read_after_append(store: HistoryStore, bars: Sequence[BarEvent]) -> tuple[float, float, float]:
    """Per append on a store already holding bars: append alone, append then read, and a
    second (cached) read. Seconds each; ``bars`` must follow the stored ones."""
    half = len(bars) // 2
    t = time.perf_counter()
    for bar in bars[:half]:
        store.on_bar(bar)
    plain = (time.perf_counter() - t) / half
    frame = store.frame
    t = time.perf_counter()
    for bar in bars[half : 2 * half]:
        store.on_bar(bar)
        frame(SYMBOL, INTERVAL)
    with_read = (time.perf_counter() - t) / half
    t = time.perf_counter()
    for _ in range(half):
        frame(SYMBOL, INTERVAL)
    cached = (time.perf_counter() - t) / half
    return plain, with_read, cached


# -- naive -----------------------------------------------------------------------------------


def naive_append(frame: pd.DataFrame, bar: BarEvent, path: Path | None) -> pd.DataFrame:
    """What a first attempt does: one-row frame, append it to the CSV and to the history.

    Without ``path`` only the history part (the concat) is done.
    """
    one = pd.DataFrame([row(bar)], columns=list(COLUMNS))
    if path is not None:
        one.to_csv(path, mode="a", header=False, index=False)
    return pd.concat([frame, one], ignore_index=True)


def naive_run(count: int, budget: float, tmp: str, traced: bool) -> tuple[int, float, int]:
    """Append up to ``count`` bars the naive way, stopping at ``budget`` seconds.

    Returns bars done, seconds, and the traced peak bytes (0 unless ``traced``).
    """
    path = Path(tmp) / "naive.csv"
    path.unlink(missing_ok=True)
    bars = make_bars(0, count)
    gc.collect()
    if traced:
        tracemalloc.start()
    try:
        t = time.perf_counter()
        first = next(bars)
        frame = pd.DataFrame([row(first)], columns=list(COLUMNS))
        frame.to_csv(path, index=False)
        done = 1
        for bar in bars:
            frame = naive_append(frame, bar, path)
            done += 1
            if not done % 100 and time.perf_counter() - t > budget:
                break
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1] if traced else 0
    finally:
        if traced:
            tracemalloc.stop()
    return done, elapsed, peak


def naive_cost_at(size: int, samples: int, tmp: str, csv: bool = True) -> float:
    """Seconds per naive append when the history already holds ``size`` bars."""
    n = np.arange(size, dtype=np.float64)
    base = pd.DataFrame(
        {
            "close": 60_000.0 + n, "high": 60_010.0 + n, "low": 59_990.0 + n,
            "open": 60_001.0 + n, "volume": 11.0 + n, "baseVolume": 624_782.0 + n,
            "datetime": pd.date_range(T0, periods=size, freq="1min"),
        }
    )  # fmt: skip
    path = Path(tmp) / "naive_sample.csv" if csv else None
    bars = list(make_bars(size, samples))
    best = float("inf")
    for bar in bars:
        t = time.perf_counter()
        naive_append(base, bar, path)
        best = min(best, time.perf_counter() - t)
    return best


def naive_peak_at(size: int, tmp: str) -> int:
    """Peak bytes of a naive history of ``size`` bars: the frame plus one traced append."""
    frame = pd.concat(
        [pd.DataFrame([row(bar)], columns=list(COLUMNS)) for bar in make_bars(0, 2)],
        ignore_index=True,
    )
    frame = frame.loc[np.zeros(size, dtype=np.int64)].reset_index(drop=True)
    bar = next(make_bars(size, 1))
    gc.collect()
    tracemalloc.start()
    try:
        naive_append(frame, bar, Path(tmp) / "naive_peak.csv")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return int(frame.memory_usage(deep=True).sum()) + peak


def integrate(costs: dict[int, float], upto: int) -> float:
    """Total seconds for ``upto`` appends, the per-append cost linear between samples."""
    points = sorted(costs.items())
    total = 0.0
    for (n0, c0), (n1, c1) in itertools.pairwise(points):
        if n0 >= upto:
            break
        end = min(n1, upto)
        c_end = c0 + (c1 - c0) * (end - n0) / (n1 - n0)
        total += (end - n0) * (c0 + c_end) / 2
    return total


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", default="10000,100000,1000000", help="bar counts, comma-separated")
    p.add_argument("--rounds", type=int, default=2, help="timing rounds below 1M bars")
    p.add_argument("--naive-budget", type=float, default=15.0, help="seconds for the full run")
    p.add_argument("--reads", type=int, default=2_000, help="appends in the read-after test")
    p.add_argument("--streams", type=int, default=2_000, help="streams in the many-stream test")
    p.add_argument("--stream-bars", type=int, default=60, help="bars per stream there")
    args = p.parse_args()
    out = Reporter("history_growth", args.results)
    sizes = [int(s) for s in args.sizes.split(",")]
    out.note(f"one stream, closed 1m bars; load {load_average()}")
    reads = 2 * args.reads
    all_bars = list(make_bars(0, max(sizes) + reads))

    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        # The naive baseline first: its full run up to the smallest size, then samples.
        done, naive_s, _ = naive_run(sizes[0], args.naive_budget, tmp, traced=False)
        costs = {0: naive_cost_at(1, 20, tmp)}
        costs[done] = naive_cost_at(done, 50, tmp)
        for size in sizes:
            if size > done:
                costs[size] = naive_cost_at(size, 20 if size < 500_000 else 8, tmp)
        measured = {size: naive_s * size / done for size in sizes if size <= done}
        concat_costs = {n: naive_cost_at(max(1, n), 20, tmp, csv=False) for n in costs}
        if done < sizes[0]:
            out.note(
                f"naive: time box {args.naive_budget:.0f} s hit after {done:,} bars; "
                "the rest is estimated"
            )
        out.note(
            f"naive: ran {done:,} bars in full ({naive_s:.2f} s); per-bar cost sampled at "
            + ", ".join(f"{n:,} bars {c * 1e3:.2f} ms" for n, c in sorted(costs.items()))
            + "; totals beyond the full run are that cost integrated (estimated)"
        )

        last_store: HistoryStore | None = None
        for size in sizes:
            rounds = args.rounds if size < 500_000 else 1
            runs = []
            for _ in range(rounds):
                store_s, csv_s, read_s, last_store = quantcore_run(all_bars[:size], tmp)
                runs.append((store_s + csv_s + read_s, store_s, csv_s, read_s))
            total, store_s, csv_s, read_s = min(runs)
            naive_total = measured.get(size) or integrate(costs, size)
            estimated = "" if size in measured else " (estimated)"
            out.add(
                f"{size:,} bars: store + CSV, then read",
                f"{total:.2f} s ({total / size * 1e6:.1f} us/bar: store {store_s / size * 1e6:.2f}"
                f" + CSV {csv_s / size * 1e6:.2f}; read {read_s * 1e3:.1f} ms)",
                baseline=f"naive concat + to_csv {naive_total:,.1f} s{estimated}",
                ratio=f"{naive_total / total:,.0f}x faster",
                target=">= 100x faster" if size == 100_000 else "",
                met=naive_total / total >= 100 if size == 100_000 else None,
            )
            concat_total = integrate(concat_costs, size)
            out.add(
                f"{size:,} bars: HistoryStore alone, no CSV",
                f"{store_s + read_s:.2f} s ({store_s / size * 1e6:.2f} us/bar + one read)",
                baseline=f"naive pd.concat alone {concat_total:,.1f} s (estimated)",
                ratio=f"{concat_total / (store_s + read_s):,.0f}x faster",
            )
            if size == 100_000 and last_store is not None:
                follow = all_bars[size : size + reads]
                plain, with_read, cached = read_after_append(last_store, follow)
                read = with_read - plain
                out.add(
                    "read after every append (100k bars)",
                    f"{read * 1e6:.0f} us per read (append alone {plain * 1e6:.2f} us;"
                    f" cached re-read {cached * 1e6:.2f} us)",
                    baseline=f"naive append at 100k bars {costs.get(size, 0) * 1e6:,.0f} us",
                    ratio=f"{costs.get(size, 0) / with_read:,.0f}x faster per append+read",
                )
            last_store = None

        # Memory: traced separately, tracemalloc slows every allocation down.
        for size in sizes:
            held, peak, frame_bytes = store_memory(all_bars[:size])
            ratio = held / frame_bytes
            out.add(
                f"{size:,} bars: HistoryStore memory",
                f"{held / size:.0f} B/bar held, {peak / size:.0f} B/bar peak (tracemalloc)",
                baseline=f"DataFrame memory_usage(deep=True) {frame_bytes / size:.0f} B/bar",
                ratio=f"{ratio:.2f}x",
                target="<= 2x",
                met=ratio <= 2,
            )
        spread = [
            replace(bar, symbol=f"S{i % args.streams:04d}USDT")
            for i, bar in enumerate(all_bars[: args.streams * args.stream_bars])
        ]
        held, _, frame_bytes = store_memory(spread, read=False)
        ratio = held / frame_bytes
        out.add(
            f"{args.streams:,} streams x {args.stream_bars} bars: memory",
            f"{held / len(spread):.0f} B/bar held, no frame read (as live)",
            baseline=f"DataFrames' memory_usage(deep=True) {frame_bytes / len(spread):.0f} B/bar",
            ratio=f"{ratio:.2f}x",
            target="<= 2x",
            met=ratio <= 2,
        )
        size = 100_000 if 100_000 in sizes else sizes[-1]
        _, peak, _ = store_memory(all_bars[:size])
        naive_peak = naive_peak_at(size, tmp)
        out.add(
            f"{size:,} bars: peak memory while appending",
            f"HistoryStore {peak / 2**20:.1f} MiB",
            baseline=f"naive concat {naive_peak / 2**20:.1f} MiB (frame + one append traced)",
            ratio=f"{naive_peak / peak:.1f}x less",
        )
    out.save()


if __name__ == "__main__":
    main()
