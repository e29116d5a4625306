"""End to end: local exchange (own process, speed max) → transport → quantcore App → CSV.

The same blast (a fresh exchange with the same seed each time) is read, in alternating
rounds, by the App with each transport (``feed.transport``: picows, websockets,
python-binance; HistoryStore + CsvRecorder) and by three bare loops that only receive:
python-binance's socket, websockets + ``orjson.loads``, and picows + ``orjson.loads``
(Cython framing, one callback per frame: the floor any Python client pays, which every
client is reported against). The figure
is the client process's CPU time (user + sys) per frame, median of the rounds: it is the
real cost whether or not the exchange is the limit.

Optionally two peer libraries doing the same job (closed bars kept, one CSV line each) join
the rounds: cryptofeed and unicorn-binance-websocket-api, run as ``bench/peers/*.py`` by
another interpreter (``--peers-python``: a separate venv, they are not quantcore
dependencies), each timed by itself between its first and last frame.

Run: python bench/end_to_end.py [--bars N] [--rounds R] [--peers-python PATH]
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import orjson
import picows
import websockets
from _common import (
    BLAST_START_DELAY,
    ExchangeProcess,
    Reporter,
    app_config,
    blast_process,
    cpu_seconds,
    load_average,
    median,
    parser,
    run_main,
)

from quantcore.app import App
from quantcore.component import Component
from quantcore.events import BAR_PARTIAL, BarEvent, FeedState, FeedStatus
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


class _ExchangeLoad:
    """The share of one core the exchange process used from creation to :meth:`share`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu = cpu_seconds(pid)
        self.started = time.perf_counter()

    def share(self) -> float:
        return (cpu_seconds(self.pid) - self.cpu) / (time.perf_counter() - self.started)


class _Probe(Component):
    """Subscribed last, to closed bars only (so it adds no ``bar.partial`` subscriber):
    notes wall and CPU time at the first closed bar and at the last, and the feed's frame
    count at both; the frames between them are the ones timed.

    Clocks are read only at those two points: a CPU-time clock per event would cost
    more than some of the stages it measures.
    """

    def __init__(self, bars: int) -> None:
        super().__init__(name="probe")
        self.target = bars
        self.bars = 0
        self.first = (0.0, 0.0)
        self.last = (0.0, 0.0)
        self.frames = (0, 0)
        self.connected = self.live = 0.0
        self.app: App | None = None

    def _feed_frames(self) -> int:
        assert self.app is not None and self.app.feed is not None
        return self.app.feed.stats.frames

    def on_feed_status(self, status: FeedStatus) -> None:
        if status.state is FeedState.CONNECTED and not self.connected:
            self.connected = time.perf_counter()
        elif status.state is FeedState.LIVE and not self.live:
            self.live = time.perf_counter()

    def on_bar(self, bar: BarEvent) -> None:
        self.bars += 1
        if self.bars == 1:
            self.first = (time.perf_counter(), time.process_time())
            self.frames = (self._feed_frames(), 0)
        elif self.bars == self.target:
            self.last = (time.perf_counter(), time.process_time())
            self.frames = (self.frames[0], self._feed_frames())


async def run_app(
    exchange: ExchangeProcess, names: list[str], bars: int, transport: str, history: bool = True
) -> Run:
    """The App until ``bars`` closed bars went out; HistoryStore + CsvRecorder, no console
    (``history=False``: CsvRecorder alone). Nobody subscribes to ``bar.partial``."""
    probe = _Probe(bars)
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        config = app_config(exchange.ws_url, exchange.rest_url, names, tmp)
        # The blast's clock stands after its last bar: nothing is old enough to skip.
        feed = replace(config.feed, transport=transport, backfill_limit=10**6)  # type: ignore[arg-type]
        consumers = config.consumers if history else config.consumers[1:]
        config = replace(config, feed=feed, consumers=consumers)
        app = probe.app = App(config, [probe])
        exchange_load = _ExchangeLoad(exchange.pid)
        await app.run(max_bars=bars, duration=120)
        exchange_cpu = exchange_load.share()
    assert app.feed is not None
    stats = app.feed.stats
    if stats.bars != bars or stats.malformed or app.bus.has_subscribers(BAR_PARTIAL):
        raise RuntimeError(f"app run incomplete or not comparable: {stats.summary()}")
    if not probe.connected or probe.live - probe.connected > BLAST_START_DELAY / 2:
        # Frames parsed before the pump ran would be decoded outside the timed span.
        raise RuntimeError("the App went live after the blast began: figure not comparable")
    frames = probe.frames[1] - probe.frames[0]
    return Run(frames, probe.last[0] - probe.first[0], probe.last[1] - probe.first[1], exchange_cpu)


async def run_bare(exchange: ExchangeProcess, names: list[str], frames: int) -> Run:
    """python-binance alone: receive ``frames`` messages of the same streams, do nothing."""
    client = AsyncClient()
    client.API_URL = exchange.rest_url.rstrip("/")
    manager = BinanceSocketManager(client, max_queue_size=100_000)
    manager.STREAM_URL = exchange.ws_url
    exchange_load = _ExchangeLoad(exchange.pid)
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
    exchange_cpu = exchange_load.share()
    return Run(frames - 1, last[0] - first[0], last[1] - first[1], exchange_cpu)


async def run_floor(exchange: ExchangeProcess, names: list[str], frames: int) -> Run:
    """websockets + orjson alone: receive and decode ``frames`` messages, do nothing else."""
    url = f"{exchange.ws_url}stream?streams={'/'.join(stream_name(n, '1m') for n in names)}"
    exchange_load = _ExchangeLoad(exchange.pid)
    async with websockets.connect(url, compression=None, max_size=1 << 22) as ws:
        loads = orjson.loads
        loads(await ws.recv(decode=False))
        first = (time.perf_counter(), time.process_time())
        for _ in range(frames - 1):
            loads(await ws.recv(decode=False))
        last = (time.perf_counter(), time.process_time())
    exchange_cpu = exchange_load.share()
    return Run(frames - 1, last[0] - first[0], last[1] - first[1], exchange_cpu)


class _PicowsFloor(picows.WSListener):
    """picows + orjson alone: decode each frame's payload, note the clocks at the first
    and the last frame, do nothing else (the cheapest Python client of this stream)."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.left = frames
        self.first = self.last = (0.0, 0.0)
        self.done = asyncio.get_running_loop().create_future()

    def on_ws_frame(self, transport: picows.WSTransport, frame: picows.WSFrame) -> None:
        if frame.msg_type is not _PICOWS_TEXT:
            return
        orjson.loads(frame.get_payload_as_bytes())
        self.left -= 1
        if not self.first[0]:
            self.first = (time.perf_counter(), time.process_time())
        elif not self.left:
            self.last = (time.perf_counter(), time.process_time())
            self.done.set_result(None)

    def on_ws_disconnected(self, transport: picows.WSTransport) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"picows floor: {self.left} frames short"))


_PICOWS_TEXT = picows.WSMsgType.TEXT


async def run_picows_floor(exchange: ExchangeProcess, names: list[str], frames: int) -> Run:
    """picows + orjson alone: receive and decode ``frames`` messages, do nothing else."""
    url = f"{exchange.ws_url}stream?streams={'/'.join(stream_name(n, '1m') for n in names)}"
    exchange_load = _ExchangeLoad(exchange.pid)
    transport, listener = await picows.ws_connect(lambda: _PicowsFloor(frames), url)
    assert isinstance(listener, _PicowsFloor)
    try:
        await asyncio.wait_for(listener.done, 120)
    finally:
        transport.disconnect()
    exchange_cpu = exchange_load.share()
    first, last = listener.first, listener.last
    return Run(frames - 1, last[0] - first[0], last[1] - first[1], exchange_cpu)


PEERS = {
    "peer:cryptofeed": ("cryptofeed_client.py", "cryptofeed"),
    "peer:unicorn": ("unicorn_client.py", "unicorn-binance-websocket-api"),
}
"""Peer kinds: the script in bench/peers and the distribution it measures."""


async def run_peer(
    exchange: ExchangeProcess, python: str, kind: str, frames: int, bars: int
) -> Run:
    """A peer client in its own process until the blast's last frame; its CSV must hold
    exactly ``bars`` closed bars, one line each."""
    script = Path(__file__).with_name("peers") / PEERS[kind][0]
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        csv = Path(tmp) / "BTCUSDT_1m.csv"
        exchange_load = _ExchangeLoad(exchange.pid)
        proc = await asyncio.create_subprocess_exec(
            python, str(script), "--ws", exchange.ws_url, "--rest", exchange.rest_url,
            "--frames", str(frames), "--csv", str(csv),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 180)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RuntimeError(f"{kind}: no result within 180 s") from None
        exchange_cpu = exchange_load.share()
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"{kind} exited {proc.returncode}: {' / '.join(tail)}")
        result = json.loads(out.decode().strip().splitlines()[-1])
        rows = csv.read_text().splitlines()[1:]
    stamps = {row.rsplit(",", 1)[-1] for row in rows}
    if result["frames"] != frames - 1 or result["bars"] != bars:
        raise RuntimeError(f"{kind} run incomplete: {result}, expected {frames} frames")
    if len(rows) != bars or len(stamps) != bars:
        raise RuntimeError(
            f"{kind}: CSV holds {len(rows)} lines ({len(stamps)} distinct bars), not {bars}"
        )
    return Run(result["frames"], result["wall"], result["cpu"], exchange_cpu)


async def peer_versions(python: str) -> dict[str, str]:
    """The version of each peer library in the peers' interpreter."""
    code = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({d: m.version(d) for d in sys.argv[1:]}))"
    )
    names = [name for _, name in PEERS.values()]
    proc = await asyncio.create_subprocess_exec(
        python, "-c", code, *names, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{python} cannot report {', '.join(names)}: are they installed?")
    versions: dict[str, str] = json.loads(out)
    return versions


async def main_async() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--bars", type=int, default=4_000, help="real BTCUSDT 1m bars in the blast")
    p.add_argument("--updates-per-bar", type=int, default=10, help="frames per bar")
    p.add_argument("--rounds", type=int, default=3, help="app and bare runs each, alternated")
    p.add_argument(
        "--peers-python",
        metavar="PATH",
        help="python of a venv with cryptofeed and unicorn-binance-websocket-api: "
        "run them too (see docs/benchmarks.md); default: no peers",
    )
    args = p.parse_args()
    out = Reporter(f"end_to_end[{args.loop}]", args.results)
    names = ["BTCUSDT"]
    bars = args.bars
    blast = bars * args.updates_per_bar
    versions = await peer_versions(args.peers_python) if args.peers_python else {}

    kinds: tuple[str, ...] = (
        "app:picows",
        "app:websockets",
        "app:python-binance",
        "csv:picows",
        "bare:python-binance",
        "bare:websockets",
        "bare:picows",
    )
    if args.peers_python:
        kinds += tuple(PEERS)
    runs: dict[str, list[Run]] = {kind: [] for kind in kinds}
    frames = 0
    for n in range(args.rounds):
        for kind in kinds if n % 2 == 0 else kinds[::-1]:
            async with blast_process(bars, args.updates_per_bar) as exchange:
                if kind.startswith("app:"):
                    run = await run_app(exchange, names, bars, kind[4:])
                    frames = frames or run.frames + 1
                elif kind.startswith("csv:"):
                    run = await run_app(exchange, names, bars, kind[4:], history=False)
                elif kind == "bare:python-binance":
                    run = await run_bare(exchange, names, blast)
                elif kind == "bare:picows":
                    run = await run_picows_floor(exchange, names, blast)
                elif kind in PEERS:
                    run = await run_peer(exchange, args.peers_python, kind, blast, bars)
                else:
                    run = await run_floor(exchange, names, blast)
                runs[kind].append(run)

    cpu = {kind: median([r.cpu_us for r in rs]) for kind, rs in runs.items()}
    rate = {kind: max(r.rate for r in rs) for kind, rs in runs.items()}
    floor = cpu["bare:picows"]
    out.note(
        f"blast of {bars:,} real BTCUSDT 1m bars x {args.updates_per_bar} frames = {frames:,} "
        f"frames per run, pre-rendered, server in its own process; median of {args.rounds} "
        f"alternating rounds; every client on the {args.loop} event loop; "
        f"load {load_average()}"
    )
    labels = {
        "app:picows": "quantcore, transport picows (App -> HistoryStore + CSV)",
        "app:websockets": "quantcore, transport websockets (App -> HistoryStore + CSV)",
        "app:python-binance": "quantcore, transport python-binance (App -> HistoryStore + CSV)",
        "csv:picows": "quantcore, transport picows, CSV only (nobody consumes partials)",
        "bare:python-binance": "bare python-binance receive loop (no CSV)",
        "bare:websockets": "websockets + orjson loop (no CSV)",
        "bare:picows": "picows + orjson listener (floor, no CSV)",
    }
    if args.peers_python:
        cf, ub = (versions[name] for _, name in PEERS.values())
        labels["peer:cryptofeed"] = f"cryptofeed {cf} (Binance CANDLES -> closed bars + CSV)"
        labels["peer:unicorn"] = (
            f"unicorn-binance-websocket-api {ub} (process_stream_data -> closed bars + CSV)"
        )
        out.note(
            f"peers with {args.peers_python}: each keeps the closed bars and appends one CSV "
            f"line per closed bar (line-buffered), checked to hold all {bars:,}; cryptofeed "
            f"as shipped runs on uvloop (FeedHandler's default); unicorn reads in its own "
            f"stream thread"
        )
    else:
        out.note(
            "peers skipped (cryptofeed, unicorn-binance-websocket-api): add --peers-python "
            "PATH, the python of a separate venv holding them (see docs/benchmarks.md)"
        )
    for kind in kinds:
        target, met = "", None
        if kind == "app:picows":
            target, met = "<= 1.5x floor", cpu[kind] / floor <= 1.5
        # Round n of every kind ran back to back: its ratio to that round's floor.
        ratios = [r.cpu_us / f.cpu_us for r, f in zip(runs[kind], runs["bare:picows"], strict=True)]
        each = " ".join(f"{r.cpu_us:.1f}" for r in runs[kind])
        out.add(
            f"client CPU per frame: {labels[kind]}",
            f"{cpu[kind]:.1f} us/frame (rounds: {each}) at {rate[kind]:,.0f} msg/s",
            baseline=f"floor {floor:.1f} us/frame",
            ratio=f"{cpu[kind] / floor:.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}x)",
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
    run_main(main_async)
