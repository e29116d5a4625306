"""A ParquetRecorder in its own process for the kill -9 test: writes 1m bars as fast as it
can from its resume point, printing each open-time index once the recorder accepted it."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from quantcore.bus import EventBus
from quantcore.component import Context
from quantcore.events import BarDecimals, BarEvent
from quantcore.sinks.parquet import ParquetRecorder

STREAM = ("ETHBTC", "1m")
T0 = datetime(2024, 11, 30, 23, 0, tzinfo=UTC)
"""An hour before a month closes, so the first compaction comes soon, and a month before
the year closes, so the writer merges a year (two months) within seconds."""


def bar(i: int) -> BarEvent:
    """Bar ``i`` minutes after T0; its strings vary in scale and length (18-digit volumes)."""
    start = T0 + timedelta(minutes=i)
    price = Decimal("0.05") + Decimal(i % 997) * Decimal("0.00000123")
    volume = f"{Decimal(i) * Decimal('1.7'):f}"
    quote = f"{6732223209 + i}.{i % 100_000_000:08d}"
    values = (f"{price:f}", f"{price + Decimal('0.0001'):f}", "0.00000001", f"{price:f}",
              volume, quote, "0", f"{i}")  # fmt: skip
    o, h, lo, c, v, q, tv, tq = values
    return BarEvent(
        *STREAM, start, start + timedelta(milliseconds=59_999),
        float(o), float(h), float(lo), float(c), float(v), float(q), i, float(tv), float(tq),
        True, start + timedelta(seconds=60), 0, BarDecimals(*values),
    )  # fmt: skip


async def main(root: str) -> None:
    recorder = ParquetRecorder(root=root)
    recorder.attach(Context(EventBus(), [STREAM], [recorder]))
    await recorder.start()
    last = recorder.resume_point(*STREAM)
    i = 0 if last is None else (last - int(T0.timestamp() * 1000)) // 60_000 + 1
    out = sys.stdout
    while True:
        recorder.on_bar(bar(i))
        out.write(f"{i}\n")
        out.flush()
        i += 1
        if not i % 100:
            await asyncio.sleep(0)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
