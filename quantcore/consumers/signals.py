"""SignalRecorder: every SignalEvent appended as one CSV line, for ``diff`` between runs.

A live run's file and a replay's hold the same lines when the strategy decided the same:
the bar's close time (UTC, ms), the stream, the side, the price (the float in plain
notation, so equal floats give equal text) and the reason, and who said it. The file is
only appended to (the header once, when it is new); give each run its own path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from quantcore.component import Component
from quantcore.decimals import plain
from quantcore.events import DATETIME_FORMAT, SignalEvent

SIGNAL_HEADER = "time,symbol,interval,side,price,reason,source\n"


def format_signal(signal: SignalEvent) -> str:
    """One CSV line; a comma in the reason or source is replaced, never quoted."""
    stamp = f"{signal.time:{DATETIME_FORMAT}}.{signal.time.microsecond // 1000:03d}"
    reason = signal.reason.replace(",", ";").replace("\n", " ")
    source = signal.source.replace(",", ";")
    return (
        f"{stamp},{signal.symbol},{signal.interval},{signal.side.value},"
        f"{plain(signal.price)},{reason},{source}\n"
    )


class SignalRecorder(Component):
    """Appends each signal to ``path`` as it is published (line-buffered: on disk at once)."""

    def __init__(self, *, path: str = "data/signals.csv", name: str | None = None) -> None:
        super().__init__(name=name)
        if not path:
            raise ValueError("path: empty; give the CSV file signals are appended to")
        self.path = Path(path)
        self.written = 0
        self._file: TextIO | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8", buffering=1, newline="")
        if self._file.tell() == 0:
            self._file.write(SIGNAL_HEADER)

    def on_signal(self, signal: SignalEvent) -> None:
        if self._file is None:
            raise RuntimeError(f"{self.name}: signal before start")
        self._file.write(format_signal(signal))
        self.written += 1

    async def stop(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
