"""Replay throughput: recorded bars through the bus, the HistoryStore and SmaCross(50, 200).

One run: N generated 1m bars (a seeded walk, exchange-style decimal strings) are written
as quantcore's CSV and SQLite stores, then replayed at full speed with ``quantcore``'s
replay feed (``App`` on the ``replay`` venue: HistoryStore + SmaCross, no console) from
each, timed from ``App.run`` to its return (store reading included). Baseline: backtrader
running an SMA cross on the same CSV with ``GenericCSVData`` (``--peers-python``: a venv
with backtrader, see docs/benchmarks.md). Target: at least 5x backtrader's bars/s.

Run: python bench/replay.py [--bars N] [--rounds R] [--peers-python PATH]
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, Reporter, parser

from quantcore.app import App
from quantcore.config import parse_config
from quantcore.consumers.csv_recorder import HEADER
from quantcore.replay.feed import replay_config
from quantcore.replay.settings import ReplaySettings
from quantcore.sinks import schema
from strategies.sma_cross import SmaCross

START_MS = 1_704_067_200_000
"""2024-01-01 00:00 UTC."""


def write_stores(folder: Path, bars: int) -> None:
    """The same bars as quantcore's CSV (BTCUSDT_1m.csv) and SQLite (bars.sqlite) rows."""
    rng = random.Random(23)
    price = 4_200_000
    lines = [HEADER]
    rows = []
    for n in range(bars):
        open_ms = START_MS + n * 60_000
        o = price
        price = max(100_000, price + rng.randint(-900, 900))
        c = price
        h, lo = max(o, c) + rng.randint(0, 400), min(o, c) - rng.randint(0, 400)
        o_, h_, l_, c_ = (f"{x / 100:.2f}" for x in (o, h, lo, c))
        v = f"{rng.randint(1, 10**8) / 10**5:.5f}"
        q = f"{float(v) * c / 100:.8f}"
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(open_ms // 1000))
        lines.append(f"{c_},{h_},{l_},{o_},{v},{q},{stamp}\n")
        rows.append(("BTCUSDT", "1m", open_ms, open_ms + 59_999, o_, h_, l_, c_, v, q,
                     rng.randint(1, 900), "0", "0", open_ms + 60_000))  # fmt: skip
    (folder / "BTCUSDT_1m.csv").write_text("".join(lines))
    conn = sqlite3.connect(folder / "bars.sqlite")
    table = schema.table_name("bars")
    with conn:
        conn.execute(schema.create_table(table, integer="INTEGER", decimal="TEXT",
                                         suffix=" WITHOUT ROWID"))  # fmt: skip
        conn.executemany(schema.insert(table, "?"), rows)
    conn.close()


async def replay_once(folder: Path, source: str) -> tuple[float, int, int]:
    """Seconds, bars and signals of one full-speed replay from ``source``."""
    raw = {
        "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
        "consumers": [
            {"class": "history"},
            {"class": "csv", "params": {"path": str(folder / "{symbol}_{interval}.csv")}},
            {"class": "sqlite", "params": {"path": str(folder / "bars.sqlite")}},
            {"class": "strategies.sma_cross:SmaCross", "params": {"fast": 50, "slow": 200}},
        ],
        "logging": {"level": "WARNING"},
    }
    config = replay_config(parse_config(raw), ReplaySettings(source=source))
    app = App(config)
    started = time.perf_counter()
    await app.run()
    seconds = time.perf_counter() - started
    assert app.feed is not None
    [strategy] = [c for c in app.components if isinstance(c, SmaCross)]
    return seconds, app.feed.stats.bars, len(strategy.signals)


def backtrader(python: str, csv: Path) -> dict[str, float]:
    script = REPO / "bench" / "peers" / "backtrader_sma.py"
    done = subprocess.run(
        [python, str(script), "--csv", str(csv)], capture_output=True, text=True, check=True
    )
    answer: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--bars", type=int, default=200_000, help="1m bars in the store")
    p.add_argument("--rounds", type=int, default=3, help="best of R interleaved rounds")
    p.add_argument("--peers-python", help="python of a venv with backtrader (the baseline)")
    args = p.parse_args()
    report = Reporter("replay", args.results)
    import logging

    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="qc-replay-") as tmp:
        folder = Path(tmp)
        write_stores(folder, args.bars)
        best: dict[str, float] = {}
        runs: list[dict[str, float]] = []
        for _ in range(args.rounds):
            # interleaved rounds: a load spike on the shared machine hits every contender
            for source in ("csv", "sqlite"):
                seconds, bars, signals = asyncio.run(replay_once(folder, source))
                assert bars == args.bars, (bars, args.bars)
                best[source] = min(best.get(source, seconds), seconds)
            if args.peers_python:
                runs.append(backtrader(args.peers_python, folder / "BTCUSDT_1m.csv"))
        rates = {source: args.bars / seconds for source, seconds in best.items()}
        for source, seconds in best.items():
            report.note(f"{source}: {args.bars} bars in {seconds:.2f}s, {signals} SmaCross signals")
        baseline = None
        if runs:
            fastest = min(runs, key=lambda r: r["seconds"])
            baseline = fastest["bars"] / fastest["seconds"]
            report.note(
                f"backtrader {fastest['version']}: {fastest['bars']:.0f} bars in "
                f"{fastest['seconds']:.2f}s, {fastest['crossings']:.0f} crossings"
            )
        for source, rate in rates.items():
            if baseline is None:
                report.add(f"{source} replay bars/s", f"{rate:,.0f}")
                continue
            ratio = rate / baseline
            report.add(
                f"{source} replay bars/s", f"{rate:,.0f}", baseline=f"backtrader {baseline:,.0f}",
                ratio=f"{ratio:.1f}x", target=">= 5x backtrader", met=ratio >= 5,
            )  # fmt: skip
    report.save()


if __name__ == "__main__":
    sys.exit(main())
