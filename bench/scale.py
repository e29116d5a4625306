"""Scale: the whole Binance spot market at 1m (~2,000 symbols) in real time, for minutes.

The local exchange plays every symbol at speed 1 with 30 in-progress updates per 1m bar
(one per symbol every 2 s, Binance's pace: ~1,000 msg/s) in its own process. First a
bare python-binance client reads the same streams for a while (the baseline), then the
quantcore App (HistoryStore + one CSV per symbol) runs while a sampler records CPU,
memory and file handles once a second. The run must cross a minute boundary for closed
bars (and CSV rows) to appear: the exchange's market clock starts at the current minute.
By default the exchange runs its realistic profile (``simulate --realistic``: Binance's
URL, stream, message, connection-attempt and REST-weight limits, REST lag, late and
missing ``x:true``); ``--kind`` runs the kind one for comparison.

Run: python bench/scale.py [--seconds S] [--symbols N] [--baseline-seconds S]
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import warnings
from array import array
from dataclasses import dataclass
from pathlib import Path

from _common import (
    ExchangeProcess,
    Histogram,
    Reporter,
    app_config,
    cpu_seconds,
    exchange_process,
    fd_limit,
    load_average,
    median,
    mib,
    open_fds,
    parser,
    peak_rss_bytes,
    percentile,
    rss_bytes,
    run_main,
    symbols,
)

from quantcore.app import App
from quantcore.component import Component
from quantcore.events import BarEvent
from quantcore.feeds.binance.codec import stream_name
from quantcore.feeds.binance.feed import BinanceKlineFeed

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from binance import AsyncClient, BinanceSocketManager

MAX_URL = 8000
"""Binance refuses longer combined-stream URLs; the realistic exchange does too."""


@dataclass(slots=True)
class Sample:
    """One reading of the sampler: wall, this process's CPU and RSS, exchange CPU, fds."""

    wall: float
    cpu: float
    rss: int
    exchange_cpu: float
    fds: int


class _Probe(Component):
    """Subscribed after the CsvRecorder: latency of closed bars, cadence and lag of updates.

    Its memory is bounded (histograms, compact arrays) so it does not blur the
    flatness figure.
    """

    def __init__(self, offset_ms: float) -> None:
        super().__init__(name="probe")
        self.offset_ms = offset_ms
        self.frames = 0
        self.closed = array("q")
        """Flattened (event time ms, received ns, CSV written ns) per closed bar."""
        self.last: dict[str, int] = {}
        self.gaps = Histogram(0.01, 1_000)
        """Seconds between two updates of the same symbol."""
        self.burst_lag = array("d")
        """Per burst of updates (all symbols share an event time): its first frame's
        arrival minus the event time, in ms. The first frame waits for nothing on our
        side, so this is the exchange's own lateness plus transport."""
        self.burst_span = array("d")
        """Per burst: ms from its first to its last frame, i.e. how long draining it took."""
        self._event_ms = 0
        self.first_close = 0.0
        """perf_counter at the first closed bar (HistoryStore's streams start then)."""
        self._first_ns = self._last_ns = 0

    def on_bar(self, bar: BarEvent) -> None:
        done = time.time_ns()
        if not self.first_close:
            self.first_close = time.perf_counter()
        self.frames += 1
        self.closed.extend((_ms(bar.event_time.timestamp()), bar.received_ns, done))

    def on_bar_partial(self, bar: BarEvent) -> None:
        self.frames += 1
        received = bar.received_ns
        last = self.last.get(bar.symbol)
        if last is not None:
            self.gaps.add((received - last) / 1e9)
        self.last[bar.symbol] = received
        event_ms = _ms(bar.event_time.timestamp())
        if event_ms != self._event_ms:
            if self._event_ms:
                self.burst_span.append((self._last_ns - self._first_ns) / 1e6)
            self.burst_lag.append(received / 1e6 + self.offset_ms - event_ms)
            self._event_ms, self._first_ns = event_ms, received
        self._last_ns = received


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


async def clock_offset_ms(rest_url: str) -> float:
    """Exchange market time minus local wall time (ms), from the lowest-RTT of a few asks."""
    client = AsyncClient()
    client.API_URL = rest_url.rstrip("/")
    best: tuple[float, float] = (float("inf"), 0.0)
    try:
        for _ in range(5):
            before = time.time()
            answer = await client.get_server_time()
            after = time.time()
            offset = answer["serverTime"] - (before + after) * 500
            best = min(best, (after - before, offset))
    finally:
        await client.close_connection()
    return best[1]


async def bare_baseline(
    exchange: ExchangeProcess, names: list[str], seconds: float
) -> tuple[float, float]:
    """python-binance alone on the same streams: messages/s and CPU share of one core."""
    client = AsyncClient()
    client.API_URL = exchange.rest_url.rstrip("/")
    manager = BinanceSocketManager(client, max_queue_size=100_000)
    manager.STREAM_URL = exchange.ws_url
    streams = [stream_name(n, "1m") for n in names]
    groups: list[list[str]] = [[]]
    for name in streams:
        url = len(exchange.ws_url) + len("stream?streams=") + len("/".join([*groups[-1], name]))
        if groups[-1] and (url > MAX_URL or len(groups[-1]) >= 1024):
            groups.append([])
        groups[-1].append(name)
    sockets = [manager.multiplex_socket(group) for group in groups]
    received = 0
    try:
        for socket in sockets:
            await socket.__aenter__()
        await asyncio.gather(*(socket.recv() for socket in sockets))
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        end = start_wall + seconds

        async def drain(socket: object) -> None:
            nonlocal received
            while time.perf_counter() < end:
                await socket.recv()  # type: ignore[attr-defined]
                received += 1

        await asyncio.gather(*(drain(socket) for socket in sockets))
        wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    finally:
        for socket in sockets:
            socket.TIMEOUT = 0.1
            with contextlib.suppress(Exception):
                await socket.__aexit__(None, None, None)
        await client.close_connection()
    return received / wall, cpu / wall


async def sampler(exchange_pid: int, out: list[Sample]) -> None:
    while True:
        out.append(
            Sample(
                time.perf_counter(),
                time.process_time(),
                rss_bytes(),
                cpu_seconds(exchange_pid),
                open_fds(),
            )
        )
        await asyncio.sleep(1.0)


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def _share(samples: list[Sample], attr: str) -> float:
    first, last = samples[0], samples[-1]
    used: float = getattr(last, attr) - getattr(first, attr)
    return used / (last.wall - first.wall)


def _csv_rows(folder: Path) -> list[int]:
    """Data rows in each CSV written (the header line is not counted)."""
    return [len(path.read_bytes().splitlines()) - 1 for path in folder.glob("*.csv")]


async def main_async() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--seconds",
        type=float,
        default=95.0,
        help="App run time (>= 65 s to cross a minute; 95: the closes the exchange withholds "
        "are settled over REST about 10 s after it, inside the run)",
    )
    p.add_argument("--baseline-seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=6.0, help="App seconds not measured")
    p.add_argument("--symbols", type=int, default=2_000)
    p.add_argument("--updates-per-bar", type=int, default=30, help="x:false per 1m bar")
    p.add_argument(
        "--kind",
        action="store_true",
        help="the kind exchange (no Binance limits) instead of the realistic profile",
    )
    args = p.parse_args()
    out = Reporter(f"scale[{args.transport}]", args.results)
    names = symbols(args.symbols)
    expected = args.symbols * args.updates_per_bar / 60
    samples: list[Sample] = []
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        async with exchange_process(
            names, speed="1", updates_per_bar=args.updates_per_bar, realistic=not args.kind
        ) as exchange:
            offset = await clock_offset_ms(exchange.rest_url)
            probe = _Probe(offset)
            bare_rate, bare_cpu = await bare_baseline(exchange, names, args.baseline_seconds)
            app = App(
                app_config(
                    exchange.ws_url, exchange.rest_url, names, tmp, transport=args.transport
                ),
                [probe],
            )
            task = asyncio.create_task(sampler(exchange.pid, samples))
            try:
                summary = await app.run(duration=args.seconds)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        csv_rows = _csv_rows(Path(tmp))

    feed = app.feed
    assert isinstance(feed, BinanceKlineFeed)
    stats = feed.stats
    out.add(
        "exchange limits",
        f"{len(feed.plan_connections())} connections, REST weight {feed.rest_budget.spent} "
        f"in {stats.rest_calls} calls, backfilled {stats.backfilled} bars, "
        f"429/418 seen {stats.rate_limited}, reconnects {stats.reconnects}",
        target="no 429/418, no reconnect",
        met=stats.rate_limited == 0 and stats.reconnects == 0,
    )
    window = [s for s in samples if s.wall >= samples[0].wall + args.warmup]
    cpu_share = _share(window, "cpu")
    exchange_share = _share(window, "exchange_cpu")
    frames_rate = probe.frames / (args.seconds)
    out.note(
        f"transport {args.transport}; "
        f"{'kind' if args.kind else 'realistic (Binance limits on)'} exchange: "
        f"{args.symbols:,} symbols x 1m, {args.updates_per_bar} updates/bar at speed 1 "
        f"(expected ~{expected:,.0f} msg/s); App ran {args.seconds:.0f} s, measured after "
        f"{args.warmup:.0f} s; frames={summary.frames:,} reconnects={summary.reconnects} "
        f"malformed={summary.malformed}; load {load_average()}"
    )
    out.add(
        "CPU, share of one core",
        f"{cpu_share:.0%} at {frames_rate:,.0f} msg/s",
        baseline=f"bare python-binance {bare_cpu:.0%} at {bare_rate:,.0f} msg/s",
        ratio=f"{cpu_share / bare_cpu:.1f}x",
        target="< 50%",
        met=cpu_share < 0.5,
    )
    out.note(
        "RSS every 10 s: "
        + ", ".join(f"{s.wall - samples[0].wall:.0f}s {s.rss / 2**20:.0f}" for s in samples[::10])
        + " MiB"
    )
    thirds = max(1, len(window) // 3)
    first = median([s.rss for s in window[:thirds]])
    last = median([s.rss for s in window[-thirds:]])
    growth = last / first - 1
    out.add(
        "RSS, first vs last third of the run",
        f"{mib(first)} -> {mib(last)} ({growth:+.1%}), peak {mib(peak_rss_bytes())}",
        target="flat (within +-5%)",
        met=abs(growth) <= 0.05,
    )
    closed = [tuple(probe.closed[i : i + 3]) for i in range(0, len(probe.closed), 3)]
    after = [x for x in window if probe.first_close and x.wall >= probe.first_close + 5]
    before = [x.rss for x in window if not probe.first_close or x.wall < probe.first_close]
    if len(after) >= 15 and before:
        slope = _slope([(x.wall, x.rss) for x in after]) * 60
        out.add(
            "RSS after the first closes",
            f"step {mib(after[0].rss - median(before))} at the first closes, then "
            f"{slope / 2**20:+.2f} MiB/min over {after[-1].wall - after[0].wall:.0f} s",
        )
    if closed:
        bursts: dict[int, int] = {}
        for event_ms, received, _ in closed:
            bursts[event_ms] = min(bursts.get(event_ms, received), received)
        own = sorted((done - received) / 1e3 for _, received, done in closed)
        burst = sorted((done - bursts[e]) / 1e3 for e, _, done in closed)
        emit = sorted((done / 1e6 + offset - e) for e, _, done in closed)
        out.add(
            f"received -> CSV written ({len(own):,} closes)",
            f"p50 {percentile(own, 50):.0f} us, p99 {percentile(own, 99):.0f} us, "
            f"max {own[-1]:.0f} us",
            target="p99 <= 1,000 us",
            met=percentile(own, 99) <= 1_000,
        )
        out.add(
            "first close of the minute received -> each CSV line",
            f"p50 {percentile(burst, 50) / 1e3:.1f} ms, p99 {percentile(burst, 99) / 1e3:.1f} ms,"
            f" max {burst[-1] / 1e3:.1f} ms",
        )
        out.add(
            "exchange event time E -> CSV written",
            f"p50 {percentile(emit, 50):.0f} ms, p99 {percentile(emit, 99):.0f} ms, "
            f"max {emit[-1]:.0f} ms",
        )
    else:
        out.note("no closed bar: the run did not cross a minute boundary (use --seconds >= 65)")
    written = sum(1 for rows in csv_rows if rows > 0)
    out.add(
        "CSV files with rows",
        f"{written:,} of {len(csv_rows):,} ({sum(csv_rows):,} rows), "
        f"fds peak {max(s.fds for s in samples):,} of {fd_limit():,}",
        target=f"{args.symbols:,} files",
        met=written == args.symbols,
    )
    gaps = probe.gaps
    lags = sorted(probe.burst_lag)
    spans = sorted(probe.burst_span)
    third = max(1, len(probe.burst_lag) // 3)
    early = median(probe.burst_lag[:third])
    late = median(probe.burst_lag[-third:])
    step = 60 / args.updates_per_bar
    out.add(
        "exchange cadence, one symbol",
        f"median {gaps.percentile(50):.2f} s, p99 {gaps.percentile(99):.2f} s "
        f"(expected {step:.2f} s; 10 ms bins)",
        target=f"{step:.1f} s +-10%",
        met=abs(gaps.percentile(50) / step - 1) <= 0.1,
    )
    out.add(
        "exchange lateness, first frame of a burst",
        f"p50 {percentile(lags, 50):.0f} ms, p99 {percentile(lags, 99):.0f} ms "
        f"(first third {early:.0f} ms, last third {late:.0f} ms); exchange CPU "
        f"{exchange_share:.0%} of a core; a burst of {args.symbols:,} updates is drained in "
        f"{percentile(spans, 50):.0f} ms (p50), {percentile(spans, 99):.0f} ms (p99)",
    )
    out.save()


if __name__ == "__main__":
    run_main(main_async)
