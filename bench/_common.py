"""Shared helpers for the benchmark scripts: figures, frames, the exchange subprocess, /proc.

Every script reports through :class:`Reporter` so each figure is one printed line and,
with ``--results FILE``, one JSON record that ``bench/run_all`` turns into its table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from quantcore.config import AppConfig, parse_config
from quantcore.sim.generator import RandomWalkSource
from quantcore.sim.market import Market

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
"""Recorded Binance data beside the clone (read only, never copied into the repo)."""
RECORDED_FRAMES = DATA / "binance_spot_ws_kline_1m_3sym_2021-04-04.jsonl"

START_MS = 1_725_000_000_000
"""A fixed minute boundary (2024-08-30 06:40 UTC) so generated frames are reproducible."""


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure with what it is compared against and the target it answers."""

    bench: str
    name: str
    value: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    met: bool | None = None

    def line(self) -> str:
        parts = [f"{self.bench}: {self.name}: {self.value}"]
        if self.baseline:
            parts.append(f"baseline {self.baseline}")
        if self.ratio:
            parts.append(f"ratio {self.ratio}")
        if self.target:
            parts.append(f"target {self.target}: {status(self.met)}")
        return " | ".join(parts)


def status(met: bool | None) -> str:
    return "-" if met is None else ("MET" if met else "MISSED")


class Reporter:
    """Prints each figure as it is measured and saves them all for run_all's table."""

    def __init__(self, bench: str, results: str | None) -> None:
        self.bench = bench
        self.results = results
        self.figures: list[Figure] = []

    def add(
        self,
        name: str,
        value: str,
        *,
        baseline: str = "",
        ratio: str = "",
        target: str = "",
        met: bool | None = None,
    ) -> None:
        figure = Figure(self.bench, name, value, baseline, ratio, target, met)
        self.figures.append(figure)
        print(figure.line(), flush=True)

    def note(self, text: str) -> None:
        """Context that is not a figure (method, caveats), printed indented."""
        print(f"  {self.bench}: {text}", flush=True)

    def save(self) -> None:
        if self.results:
            Path(self.results).write_text(json.dumps([asdict(f) for f in self.figures]))


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the ``--results`` and ``--transport`` options every script
    shares (``--transport`` only matters where an App reads a stream)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--results", help="also write the figures as JSON to this file (run_all)")
    p.add_argument(
        "--transport",
        choices=("picows", "websockets", "python-binance"),
        default="picows",
        help="feed.transport of the App",
    )
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="the event loop the whole script runs on (the App's runtime.loop)",
    )
    return p


def run_main(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a script's ``main`` on the event loop its ``--loop`` option names."""
    known, _ = parser("").parse_known_args()
    if known.loop == "uvloop":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


# -- statistics ------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (q in 0..100)."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Histogram:
    """Fixed-size histogram: percentiles of millions of values without storing them, so a
    long run's probe does not itself make memory grow."""

    def __init__(self, width: float, bins: int) -> None:
        self.width = width
        self.counts = [0] * (bins + 1)
        self.total = 0

    def add(self, value: float) -> None:
        index = min(len(self.counts) - 1, max(0, int(value / self.width)))
        self.counts[index] += 1
        self.total += 1

    def percentile(self, q: float) -> float:
        """Upper edge of the bin holding the q-th percentile (nan when empty)."""
        if not self.total:
            return float("nan")
        rank, seen = q / 100 * self.total, 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank and count:
                return (index + 1) * self.width
        return len(self.counts) * self.width


def best_and_median(fn: Callable[[], float], rounds: int) -> tuple[float, float]:
    """Run a timing ``rounds`` times; the best is the least disturbed by other load."""
    samples = [fn() for _ in range(rounds)]
    return min(samples), median(samples)


# -- frames ----------------------------------------------------------------------------------


def symbols(count: int) -> list[str]:
    """Synthetic Binance-style symbols; the generator gives each its own price level."""
    return [f"C{i:04d}USDT" for i in range(count)]


class _Enough(Exception):
    """Stops the market playback once enough frames were collected."""


class _CollectingSink:
    """The exchange hub's role for Market.run: wraps each frame as a combined stream does."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.frames: list[bytes] = []

    def wants(self, stream: str) -> bool:
        return True

    async def wait_listening(self) -> None:
        return None

    async def publish(self, stream: str, payload: str) -> None:
        self.frames.append(f'{{"stream":"{stream}","data":{payload}}}'.encode())
        if len(self.frames) >= self.count:
            raise _Enough


def generate_frames(
    count: int, names: Sequence[str], updates_per_bar: int = 30, seed: int = 1
) -> list[bytes]:
    """``count`` combined-stream kline frames exactly as the local exchange sends them.

    Each bar is ``updates_per_bar`` in-progress updates then one closed update, symbols
    interleaved as on a combined connection.
    """
    sources = [RandomWalkSource(name, "1m", seed) for name in names]
    market = Market(sources, speed=None, start_ms=START_MS, updates_per_bar=updates_per_bar)
    sink = _CollectingSink(count)

    async def play() -> None:
        with contextlib.suppress(_Enough):
            await market.run(sink)

    asyncio.run(play())
    return sink.frames


def recorded_frames() -> list[bytes]:
    """Real Binance kline frames recorded in 2021 (tests/data)."""
    return [line for line in RECORDED_FRAMES.read_bytes().splitlines() if line.strip()]


# -- the app and the exchange ----------------------------------------------------------------


def app_config(
    ws_url: str,
    rest_url: str,
    names: Sequence[str],
    csv_dir: str,
    stall_timeout: float = 10.0,
    transport: str = "websockets",
) -> AppConfig:
    """HistoryStore + CsvRecorder (no console) on 1m streams of ``names``."""
    return parse_config(
        {
            "exchange": {"ws_url": ws_url, "rest_url": rest_url},
            "streams": [{"symbol": name, "interval": "1m"} for name in names],
            "feed": {"stall_timeout": stall_timeout, "transport": transport},
            "consumers": [
                {"class": "history"},
                {"class": "csv", "params": {"path": f"{csv_dir}/{{symbol}}_{{interval}}.csv"}},
            ],
            "logging": {"level": "WARNING"},
        },
        "bench",
    )


@dataclass(frozen=True, slots=True)
class ExchangeProcess:
    """A running ``python -m quantcore.sim`` on 127.0.0.1: its URLs and process id."""

    ws_url: str
    rest_url: str
    pid: int


@contextlib.asynccontextmanager
async def exchange_process(
    names: Sequence[str],
    *,
    speed: str,
    updates_per_bar: int,
    seed: int = 1,
    realistic: bool = False,
) -> AsyncIterator[ExchangeProcess]:
    """Run the local exchange in its own process (its own core) and stop it afterwards;
    ``realistic`` turns on Binance's limits and habits (``simulate --realistic``)."""
    options = ["--realistic"] if realistic else []
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "quantcore.sim",
        "--port",
        "0",
        "--speed",
        speed,
        "--symbols",
        ",".join(names),
        "--updates-per-bar",
        str(updates_per_bar),
        "--seed",
        str(seed),
        *options,
        stdout=asyncio.subprocess.PIPE,
    )
    async with _serving(proc, "local exchange", 60) as served:
        yield served


BLAST_START_DELAY = 1.0
"""Seconds from a client's handshake to the blast's first frame: longer than any
client's start-up, so every frame is received inside the timed span."""


@contextlib.asynccontextmanager
async def blast_process(bars: int, updates: int) -> AsyncIterator[ExchangeProcess]:
    """Run ``bench/blast_server.py`` (pre-rendered real frames, sent back to back
    :data:`BLAST_START_DELAY` s after the handshake)."""
    server = Path(__file__).with_name("blast_server.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(server), "--bars", str(bars), "--updates", str(updates),
        "--start-delay", str(BLAST_START_DELAY), stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with _serving(proc, "blast server", 120) as served:
        yield served


@contextlib.asynccontextmanager
async def _serving(
    proc: asyncio.subprocess.Process, what: str, startup: float
) -> AsyncIterator[ExchangeProcess]:
    """The URLs a server process prints first; the process is ended afterwards."""
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), startup)).decode()
        match = re.search(r"ws=(\S+) rest=(\S+)", line)
        if match is None:
            raise RuntimeError(f"{what} did not print its URLs: {line!r}")
        yield ExchangeProcess(match.group(1), match.group(2), proc.pid)
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if proc.stdout is not None:  # read to the end: the pipe, then the transport, closes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.stdout.read(), 5)


# -- process measurements --------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of any process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_bytes() -> int:
    """Resident memory of this process now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    """Highest resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


def load_average() -> str:
    """The 1-minute load average, printed so noisy runs can be recognised."""
    return f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def run_args(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k != "results"}


def print_table(paths: Sequence[str]) -> None:
    """The compact table run_all ends with: the figures that answer a target."""
    figures = [Figure(**record) for path in paths for record in json.loads(Path(path).read_text())]
    rows: list[tuple[str, ...]] = [("bench", "figure", "value", "vs baseline", "target", "status")]
    for f in figures:
        if f.met is not None:
            cells = (f.bench, f.name, f.value, f.ratio, f.target, status(f.met))
            rows.append(
                tuple(_cut(c, w) for c, w in zip(cells, (14, 40, 44, 26, 18, 6), strict=True))
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
        if n == 0:
            print("  ".join("-" * width for width in widths))
    met = sum(f.met is True for f in figures)
    missed = sum(f.met is False for f in figures)
    others = sum(f.met is None for f in figures)
    print(f"targets: {met} met, {missed} missed; {others} more figures in the output above")


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


if __name__ == "__main__":
    print_table(sys.argv[1:])
