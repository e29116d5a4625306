"""Latency: frame received (``BarEvent.received_ns``) → CSV line written and flushed.

The local exchange runs in its own process at a finite speed chosen so that the stream
averages 1,000 messages/s; many symbols make closed bars (the only ones written to CSV)
frequent. A probe subscribed after the CsvRecorder reads the clock when the recorder
is done. Baseline in the same run: the bare write + flush of the same CSV line.

Run: python bench/latency.py [--seconds S] [--rate MSG_PER_S] [--symbols N]
"""

from __future__ import annotations

import os
import tempfile
import time
from datetime import datetime

from _common import (
    Reporter,
    app_config,
    exchange_process,
    load_average,
    parser,
    percentile,
    run_main,
    symbols,
)

from quantcore.app import App
from quantcore.component import Component
from quantcore.consumers.csv_recorder import format_row
from quantcore.events import BarEvent


class _Probe(Component):
    """Subscribed after HistoryStore and CsvRecorder: each handler runs once they are done."""

    def __init__(self, warmup: float) -> None:
        super().__init__(name="probe")
        self.warmup_ns = int(warmup * 1e9)
        self.start_ns = 0
        self.closed: list[int] = []
        self.partial: list[int] = []
        self.frames = 0
        self.last_ns = 0
        self.burst_start: dict[datetime, int] = {}
        """Event time → when the first closed bar of that burst (all symbols close at
        once) was received: later bars of the burst wait for the earlier ones."""
        self.from_burst: list[int] = []

    def _counted(self, received_ns: int) -> bool:
        if not self.start_ns:
            self.start_ns = received_ns + self.warmup_ns
        if received_ns < self.start_ns:
            return False
        self.frames += 1
        self.last_ns = received_ns
        return True

    def on_bar(self, bar: BarEvent) -> None:
        done = time.time_ns()
        if self._counted(bar.received_ns):
            self.closed.append(done - bar.received_ns)
            event = bar.event_time
            self.burst_start.setdefault(event, bar.received_ns)
            self.from_burst.append(done - self.burst_start[event])

    def on_bar_partial(self, bar: BarEvent) -> None:
        done = time.time_ns()
        if self._counted(bar.received_ns):
            self.partial.append(done - bar.received_ns)


def bare_write_latency(bars: list[BarEvent], folder: str) -> list[int]:
    """ns to format, write and flush one CSV line, the floor under the recorder's work."""
    out: list[int] = []
    with open(os.path.join(folder, "bare.csv"), "a", encoding="ascii", newline="") as handle:
        for bar in bars:
            start = time.time_ns()
            handle.write(format_row(bar))
            handle.flush()
            out.append(time.time_ns() - start)
    return out


def _spread(values: list[int]) -> tuple[float, float, float]:
    ordered = sorted(values)
    return (
        percentile(ordered, 50) / 1e3,
        percentile(ordered, 99) / 1e3,
        (ordered[-1] if ordered else float("nan")) / 1e3,
    )


class _Keeper(Component):
    """Keeps some closed bars for the baseline (real values, real widths)."""

    def __init__(self) -> None:
        super().__init__(name="keeper")
        self.bars: list[BarEvent] = []

    def on_bar(self, bar: BarEvent) -> None:
        if len(self.bars) < 5_000:
            self.bars.append(bar)


async def main_async() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=25.0, help="measured time after warm-up")
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--rate", type=float, default=1_000.0, help="messages/s to ask for")
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--updates-per-bar", type=int, default=11, help="x:false per bar")
    args = p.parse_args()
    out = Reporter(f"latency[{args.transport}]", args.results)
    names = symbols(args.symbols)
    per_bar = args.updates_per_bar + 1
    speed = args.rate * 60 / (args.symbols * per_bar)
    probe, keeper = _Probe(args.warmup), _Keeper()
    with tempfile.TemporaryDirectory(prefix="qc-bench-") as tmp:
        async with exchange_process(
            names, speed=f"{speed:.6g}", updates_per_bar=args.updates_per_bar
        ) as exchange:
            app = App(
                app_config(
                    exchange.ws_url, exchange.rest_url, names, tmp, transport=args.transport
                ),
                [probe, keeper],
            )
            summary = await app.run(duration=args.seconds + args.warmup + 1.0)
        bare = bare_write_latency(keeper.bars, tmp)
    window = (probe.last_ns - probe.start_ns) / 1e9
    rate = probe.frames / window if window > 0 else 0.0
    out.note(
        f"transport {args.transport}; "
        f"{args.symbols} symbols x {per_bar} updates per 1m bar at speed {speed:.4g}: "
        f"{rate:,.0f} msg/s over {window:.1f} s, in bursts of {args.symbols} frames every "
        f"{1e3 * args.symbols / args.rate:.0f} ms; {len(probe.closed):,} closed bars measured; "
        f"malformed={summary.malformed} reconnects={summary.reconnects}; load {load_average()}"
    )
    p50, p99, worst = _spread(probe.closed)
    b50, b99, bmax = _spread(bare)
    out.add(
        "received -> CSV flushed (closed bars)",
        f"p50 {p50:.0f} us, p99 {p99:.0f} us, max {worst:.0f} us",
        baseline=f"bare format+write+flush p50 {b50:.0f} us, p99 {b99:.0f} us, max {bmax:.0f} us",
        ratio=f"p99 {p99 / b99:.1f}x",
        target="p99 <= 1,000 us",
        met=p99 <= 1_000,
    )
    f50, f99, fmax = _spread(probe.from_burst)
    out.add(
        f"first of a burst of {args.symbols} closes received -> each CSV line",
        f"p50 {f50:.0f} us, p99 {f99:.0f} us, max {fmax:.0f} us",
    )
    q50, q99, qmax = _spread(probe.partial)
    out.add(
        "received -> bar.partial delivered (x:false; this probe subscribes)",
        f"p50 {q50:.0f} us, p99 {q99:.0f} us, max {qmax:.0f} us",
    )
    out.add(
        "achieved stream rate",
        f"{rate:,.0f} msg/s",
        target=f"~{args.rate:,.0f} msg/s (+-10%)",
        met=abs(rate / args.rate - 1) <= 0.1,
    )
    out.save()


if __name__ == "__main__":
    run_main(main_async)
