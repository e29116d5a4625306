"""End to end: local exchange (own process, speed max) → transport → quantcore App → CSV.

The same blast (a fresh exchange with the same seed each time) is read, in alternating
rounds, by the App with each transport (``feed.transport``: websockets, python-binance;
HistoryStore + CsvRecorder) and by two bare loops that only receive: python-binance's
socket, and websockets + ``orjson.loads`` (the floor any Python client pays). The figure
is the client process's CPU time (user + sys) per frame, median of the rounds: it is the
real cost whether or not the exchange is the limit.

Run: python bench/end_to_end.py [--frames N] [--symbols S] [--rounds R]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import warnings
from dataclasses import dataclass, replace

import orjson
import websockets
from _common import (
    ExchangeProcess,
    Reporter,
    app_config,
    blast_process,
    cpu_seconds,
    load_average,
    median,
    parser,
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


async def run_app(exchange: ExchangeProcess, names: list[str], bars: int, transport: str) -> Run:
    """The App until ``bars`` closed bars went out; HistoryStore + CsvRecorder, no console."""
    probe = _Probe(bars)
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        config = app_config(exchange.ws_url, exchange.rest_url, names, tmp)
        # The blast's clock stands after its last bar: nothing is old enough to skip.
        feed = replace(config.feed, transport=transport, backfill_limit=10**6)  # type: ignore[arg-type]
        config = replace(config, feed=feed)
        app = App(config, [probe])
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


async def run_floor(exchange: ExchangeProcess, names: list[str], frames: int) -> Run:
    """websockets + orjson alone: receive and decode ``frames`` messages, do nothing else."""
    url = f"{exchange.ws_url}stream?streams={'/'.join(stream_name(n, '1m') for n in names)}"
    exchange_cpu = cpu_seconds(exchange.pid)
    started = time.perf_counter()
    async with websockets.connect(url, compression=None, max_size=1 << 22) as ws:
        loads = orjson.loads
        loads(await ws.recv(decode=False))
        first = (time.perf_counter(), time.process_time())
        for _ in range(frames - 1):
            loads(await ws.recv(decode=False))
        last = (time.perf_counter(), time.process_time())
    exchange_cpu = (cpu_seconds(exchange.pid) - exchange_cpu) / (time.perf_counter() - started)
    return Run(frames - 1, last[0] - first[0], last[1] - first[1], exchange_cpu)


async def main_async() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=4_000, help="real BTCUSDT 1m bars in the blast")
    p.add_argument("--updates-per-bar", type=int, default=10, help="frames per bar")
    p.add_argument("--rounds", type=int, default=3, help="app and bare runs each, alternated")
    args = p.parse_args()
    out = Reporter("end_to_end", args.results)
    names = ["BTCUSDT"]
    bars = args.bars

    kinds = ("app:websockets", "app:python-binance", "bare:python-binance", "bare:websockets")
    runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
    frames = 0
    for n in range(args.rounds):
        for kind in kinds if n % 2 == 0 else kinds[::-1]:
            async with blast_process(bars, args.updates_per_bar) as exchange:
                if kind.startswith("app:"):
                    run = await run_app(exchange, names, bars, kind[4:])
                    frames = frames or run.frames + 1
                elif kind == "bare:python-binance":
                    run = await run_bare(exchange, names, bars * args.updates_per_bar)
                else:
                    run = await run_floor(exchange, names, bars * args.updates_per_bar)
                runs[kind].append(run)

    cpu = {kind: median([r.cpu_us for r in rs]) for kind, rs in runs.items()}
    rate = {kind: max(r.rate for r in rs) for kind, rs in runs.items()}
    floor = cpu["bare:websockets"]
    out.note(
        f"blast of {bars:,} real BTCUSDT 1m bars x {args.updates_per_bar} frames = {frames:,} "
        f"frames per run, pre-rendered, server in its own process; median of {args.rounds} "
        f"alternating rounds; "
        f"load {load_average()}"
    )
    labels = {
        "app:websockets": "quantcore, transport websockets (App -> HistoryStore + CSV)",
        "app:python-binance": "quantcore, transport python-binance (App -> HistoryStore + CSV)",
        "bare:python-binance": "bare python-binance receive loop (no CSV)",
        "bare:websockets": "websockets + orjson loop (floor, no CSV)",
    }
    for kind in kinds:
        target, met = "", None
        if kind == "app:websockets":
            target, met = "<= 1.5x floor", cpu[kind] / floor <= 1.5
        out.add(
            f"client CPU per frame: {labels[kind]}",
            f"{cpu[kind]:.1f} us/frame at {rate[kind]:,.0f} msg/s",
            baseline=f"floor {floor:.1f} us/frame",
            ratio=f"{cpu[kind] / floor:.2f}x",
            target=target,
            met=met,
        )
    own = cpu["app:python-binance"] / cpu["bare:python-binance"] - 1
    out.add(
        "quantcore over a bare python-binance loop (same transport)",
        f"adds {own:+.0%} CPU per frame",
        target="adds <= 25%",
        met=own <= 0.25,
    )
    out.save()


if __name__ == "__main__":
    asyncio.run(main_async())
