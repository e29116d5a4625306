"""End to end: local exchange (own process, speed max) → python-binance → quantcore App → CSV.

Compared, in the same run, with a bare python-binance loop that only receives the same
number of frames of the same stream (a fresh exchange with the same seed each time).
Throughput is capped by whichever side is slower, so the client's CPU time per message
is reported too: it is quantcore's real cost whether or not the exchange is the limit.

Run: python bench/end_to_end.py [--frames N] [--symbols S] [--rounds R]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import warnings
from dataclasses import dataclass

from _common import (
    ExchangeProcess,
    Reporter,
    app_config,
    cpu_seconds,
    exchange_process,
    load_average,
    parser,
    symbols,
)

from quantcore.app import App
from quantcore.component import Component
from quantcore.events import BarEvent
from quantcore.feeds.binance.codec import stream_name

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance import AsyncClient, BinanceSocketManager


@dataclass(frozen=True, slots=True)
class Run:
    """Frames between the first and the last one timed, and what they cost."""

    frames: int
    seconds: float
    cpu: float
    exchange_cpu_share: float

    @property
    def rate(self) -> float:
        return self.frames / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.frames * 1e6


class _Probe(Component):
    """Subscribed last: notes wall and CPU time at the first event and at the last bar.

    Clocks are read only at those two points: a CPU-time clock per event would cost
    more than some of the stages it measures.
    """

    def __init__(self, bars: int) -> None:
        super().__init__(name="probe")
        self.target = bars
        self.bars = 0
        self.events = 0
        self.first = (0.0, 0.0)
        self.last = (0.0, 0.0)

    def on_bar(self, bar: BarEvent) -> None:
        self.events += 1
        self.bars += 1
        if self.bars == self.target:
            self.last = (time.perf_counter(), time.process_time())

    def on_bar_partial(self, bar: BarEvent) -> None:
        if not self.events:
            self.first = (time.perf_counter(), time.process_time())
        self.events += 1


async def run_app(exchange: ExchangeProcess, names: list[str], bars: int) -> Run:
    """The App until ``bars`` closed bars went out; HistoryStore + CsvRecorder, no console."""
    probe = _Probe(bars)
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        app = App(app_config(exchange.ws_url, exchange.rest_url, names, tmp), [probe])
        exchange_cpu = cpu_seconds(exchange.pid)
        started = time.perf_counter()
        await app.run(max_bars=bars, duration=120)
        exchange_cpu = (cpu_seconds(exchange.pid) - exchange_cpu) / (time.perf_counter() - started)
    assert app.feed is not None
    stats = app.feed.stats
    if stats.partials + stats.bars != probe.events or stats.bars != bars or stats.malformed:
        raise RuntimeError(f"app run incomplete: {stats.summary()}")
    return Run(
        probe.events - 1,
        probe.last[0] - probe.first[0],
        probe.last[1] - probe.first[1],
        exchange_cpu,
    )


async def run_bare(exchange: ExchangeProcess, names: list[str], frames: int) -> Run:
    """python-binance alone: receive ``frames`` messages of the same streams, do nothing."""
    client = AsyncClient()
    client.API_URL = exchange.rest_url.rstrip("/")
    manager = BinanceSocketManager(client, max_queue_size=100_000)
    manager.STREAM_URL = exchange.ws_url
    exchange_cpu = cpu_seconds(exchange.pid)
    started = time.perf_counter()
    try:
        async with manager.multiplex_socket([stream_name(n, "1m") for n in names]) as socket:
            await socket.recv()
            first = (time.perf_counter(), time.process_time())
            for _ in range(frames - 1):
                await socket.recv()
            last = (time.perf_counter(), time.process_time())
            socket.TIMEOUT = 0.1
    finally:
        await client.close_connection()
    exchange_cpu = (cpu_seconds(exchange.pid) - exchange_cpu) / (time.perf_counter() - started)
    return Run(frames - 1, last[0] - first[0], last[1] - first[1], exchange_cpu)


async def main_async() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=50_000, help="approximate messages per run")
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--updates-per-bar", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3, help="app and bare runs each, alternated")
    args = p.parse_args()
    out = Reporter("end_to_end", args.results)
    names = symbols(args.symbols)
    bars = max(args.symbols, args.frames // (args.updates_per_bar + 1))

    apps: list[Run] = []
    bares: list[Run] = []
    for n in range(args.rounds):
        order = ("app", "bare") if n % 2 == 0 else ("bare", "app")
        for kind in order:
            async with exchange_process(
                names, speed="max", updates_per_bar=args.updates_per_bar
            ) as exchange:
                if kind == "app":
                    apps.append(await run_app(exchange, names, bars))
                else:
                    count = apps[-1].frames + 1 if apps else bars * (args.updates_per_bar + 1)
                    bares.append(await run_bare(exchange, names, count))

    app = max(apps, key=lambda r: r.rate)
    bare = max(bares, key=lambda r: r.rate)
    app_cpu = min(r.cpu_us for r in apps)
    bare_cpu = min(r.cpu_us for r in bares)
    out.note(
        f"{args.symbols} symbols x {args.updates_per_bar}+1 updates/bar, {app.frames:,} frames "
        f"per run, exchange in its own process; best of {args.rounds}; load {load_average()}"
    )
    out.add(
        "msg/s, python-binance -> App -> CSV",
        f"{app.rate:,.0f} msg/s",
        baseline=f"bare python-binance loop {bare.rate:,.0f} msg/s",
        ratio=f"adds {bare.rate / app.rate - 1:+.0%} time",
        target="adds <= 25%",
        met=bare.rate / app.rate - 1 <= 0.25,
    )
    out.add(
        "client CPU per message",
        f"{app_cpu:.1f} us/msg",
        baseline=f"bare python-binance loop {bare_cpu:.1f} us/msg",
        ratio=f"adds {app_cpu / bare_cpu - 1:+.0%} CPU",
        target="adds <= 25%",
        met=app_cpu / bare_cpu - 1 <= 0.25,
    )
    out.add(
        "exchange process CPU (1.0 = one core)",
        f"{app.exchange_cpu_share:.2f} during the app run",
        baseline=f"{bare.exchange_cpu_share:.2f} during the bare run",
    )
    out.save()


if __name__ == "__main__":
    asyncio.run(main_async())
