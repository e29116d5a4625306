"""In-process hot path: raw kline frames → decode + parse → sequencer/bus → HistoryStore + CSV.

The same loop as the feed's pump, minus the socket: the frame text goes to
``KlineCodec.parse`` as python-binance hands it over, so the figure is quantcore's own cost
per message. Stages are cumulative and interleaved each round; the breakdown is the
difference between consecutive stages, and the best round counts (least disturbed).

Run: python bench/pipeline.py [--frames N] [--symbols S] [--rounds R]
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import json
import tempfile
import time
from collections.abc import Callable, Sequence

import orjson
from _common import (
    Reporter,
    generate_frames,
    load_average,
    median,
    parser,
    recorded_frames,
    symbols,
)

from quantcore.bus import EventBus
from quantcore.component import Component, Context
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.consumers.history import HistoryStore
from quantcore.events import BarEvent
from quantcore.feeds.base import DataFeed
from quantcore.feeds.binance import codec
from quantcore.feeds.binance.codec import KlineCodec

STAGES = ("json", "orjson", "parse", "bus", "store", "full")
"""json.loads only; orjson.loads only; KlineCodec.parse on the text (it decodes too); +
DataFeed.offer and bus publish to a no-op subscriber; the no-op replaced by HistoryStore;
+ CsvRecorder."""


_STRUCT_DECODE: Callable[[bytes], object] | None = getattr(codec, "_decode_frame", None)
"""The codec's own first step (text → typed structs), timed alone when the codec has one."""


class _OfflineFeed(DataFeed):
    """The real ordering and dedupe step (``DataFeed.offer``) without a transport."""

    async def run(self) -> None:
        return None

    def stop(self) -> None:
        return None


class _Noop(Component):
    """A subscriber that does nothing: isolates the cost of dispatching to one handler."""

    def on_bar(self, bar: BarEvent) -> None:
        return None

    def on_bar_partial(self, bar: BarEvent) -> None:
        return None


def _decode_only(frames: Sequence[bytes], loads: Callable[[bytes], object]) -> float:
    start = time.perf_counter()
    for frame in frames:
        loads(frame)
    return time.perf_counter() - start


def _parse_only(frames: Sequence[bytes]) -> float:
    parse, now = KlineCodec().parse, time.time_ns
    start = time.perf_counter()
    for frame in frames:
        parse(frame, now())
    return time.perf_counter() - start


def _through_bus(frames: Sequence[bytes], names: Sequence[str], stage: str) -> float:
    """Frames through the sequencer and bus to the stage's subscribers; checks the counts."""
    streams = [(name, "1m") for name in names]
    bus = EventBus()
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        components: list[Component] = [_Noop()] if stage == "bus" else [HistoryStore()]
        recorder = CsvRecorder(path=f"{tmp}/{{symbol}}_{{interval}}.csv")
        if stage == "full":
            components.append(recorder)
        context = Context(bus, streams, components)
        for component in components:
            component.attach(context)
            asyncio.run(component.start())
        feed = _OfflineFeed(bus, streams, "bench")
        parse, offer, now = KlineCodec().parse, feed.offer, time.time_ns
        start = time.perf_counter()
        for frame in frames:
            offer(parse(frame, now()))
        elapsed = time.perf_counter() - start
        for component in components:
            asyncio.run(component.stop())
    stats = feed.stats
    if stats.partials + stats.bars != len(frames) or (
        stage == "full" and recorder.rows_written != stats.bars
    ):
        raise RuntimeError(f"frames went missing: {stats.summary()}")
    return elapsed


def run_stage(stage: str, frames: Sequence[bytes], names: Sequence[str]) -> float:
    """Seconds per message for one stage over all frames."""
    gc.collect()
    if stage == "json":
        elapsed = _decode_only(frames, json.loads)
    elif stage == "msgspec" and _STRUCT_DECODE is not None:
        elapsed = _decode_only(frames, _STRUCT_DECODE)
    elif stage == "orjson":
        elapsed = _decode_only(frames, orjson.loads)
    elif stage == "parse":
        elapsed = _parse_only(frames)
    else:
        elapsed = _through_bus(frames, names, stage)
    return elapsed / len(frames)


def _paired_steps(samples: dict[str, list[float]]) -> dict[str, float]:
    """Cost each stage adds (us/msg): the median over rounds of the difference to the
    previous stage in the same round, which cancels load that drifts between rounds."""
    steps: dict[str, float] = {}
    for before, stage in itertools.pairwise(STAGES[2:]):
        pairs = zip(samples[before], samples[stage], strict=True)
        steps[stage] = median([b - a for a, b in pairs]) * 1e6
    return steps


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100_000, help="messages per round")
    p.add_argument("--symbols", type=int, default=50, help="symbols interleaved in the stream")
    p.add_argument("--updates-per-bar", type=int, default=30, help="x:false updates per bar")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    out = Reporter("pipeline", args.results)

    names = symbols(args.symbols)
    frames = generate_frames(args.frames, names, args.updates_per_bar)
    closed = sum(b'"x":true' in frame for frame in frames)
    size = sum(map(len, frames)) / len(frames)
    out.note(
        f"{len(frames):,} frames from the local exchange's generator, {args.symbols} symbols, "
        f"{closed:,} closed (1 per {len(frames) / closed:.0f}), mean {size:.0f} B; "
        f"{args.rounds} rounds, best counts; load {load_average()}"
    )

    real = recorded_frames()
    real_frames = real * max(1, args.frames // max(1, len(real)) // 4)
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    extra = {"msgspec": frames} if _STRUCT_DECODE is not None else {}
    if real:
        extra["real"] = real_frames
    for _ in range(args.rounds):
        for stage in STAGES:
            samples[stage].append(run_stage(stage, frames, names))
        for stage, stage_frames in extra.items():
            kind = "parse" if stage == "real" else stage
            samples.setdefault(stage, []).append(run_stage(kind, stage_frames, names))
    best = {stage: min(values) * 1e6 for stage, values in samples.items()}
    spread = max(samples["full"]) / min(samples["full"])

    full = best["full"]
    out.add(
        "full pipeline, one core",
        f"{1e6 / full:,.0f} msg/s ({full:.2f} us/msg)",
        target=">= 100,000 msg/s",
        met=1e6 / full >= 100_000,
    )
    out.add(
        "full vs orjson.loads (python-binance's)",
        f"{full:.2f} us/msg",
        baseline=f"orjson.loads {best['orjson']:.2f} us/msg ({1e6 / best['orjson']:,.0f} msg/s)",
        ratio=f"{full / best['orjson']:.1f}x",
        target="<= 3x",
        met=full / best["orjson"] <= 3,
    )
    out.add(
        "full vs json.loads",
        f"{full:.2f} us/msg",
        baseline=f"json.loads {best['json']:.2f} us/msg ({1e6 / best['json']:,.0f} msg/s)",
        ratio=f"{full / best['json']:.1f}x",
    )
    out.note(f"the slowest round of the full pipeline took {spread:.2f}x the best")
    step = _paired_steps(samples)
    parts = {
        "decode + parse (KlineCodec.parse on the text)": best["parse"],
        **(
            {"  of which the codec's msgspec decode to structs": best["msgspec"]}
            if "msgspec" in best
            else {}
        ),
        "bus dispatch (DataFeed.offer + publish + 1 handler call)": step["bus"],
        "store (HistoryStore beyond a no-op handler)": step["store"],
        "CSV (CsvRecorder, closed bars only)": step["full"],
    }
    for name, micros in parts.items():
        out.add(f"breakdown: {name}", f"{micros:.2f} us/msg ({micros / full:.0%})")

    if real:
        real_cost = best["real"]
        gen_cost = best["parse"]
        real_size = sum(map(len, real)) / len(real)
        out.add(
            "decode+parse, recorded Binance frames",
            f"{real_cost:.2f} us/msg (mean {real_size:.0f} B)",
            baseline=f"generated frames {gen_cost:.2f} us/msg (mean {size:.0f} B)",
            ratio=f"{real_cost / gen_cost:.2f}x",
        )
    out.save()


if __name__ == "__main__":
    main()
