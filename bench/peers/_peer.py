"""What the peer clients share: their arguments, the CSV they append to, their clocks.

The peers run with a separate interpreter (their libraries are not quantcore
dependencies), so this module imports nothing from quantcore or bench/_common.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TextIO

HEADER = "close,high,low,open,volume,quoteVolume,datetime\n"
"""quantcore's CsvRecorder columns, in order (its ``baseVolume`` holds the quote volume)."""


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--ws", required=True, help="the blast server's ws:// base URL")
    p.add_argument("--rest", required=True, help="the blast server's REST base URL (…/api)")
    p.add_argument("--frames", type=int, required=True, help="frames in the blast")
    p.add_argument("--csv", required=True, help="CSV file to append closed bars to")
    p.add_argument("--timeout", type=float, default=120.0, help="give up after this (s)")
    return p.parse_args()


def stamp(open_ms: int) -> str:
    """The bar's open time as quantcore writes it: ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(open_ms // 1000))


def open_csv(path: str) -> TextIO:
    """Line-buffered: each bar's line reaches the file when the bar is handled, as
    quantcore's CsvRecorder writes its lines by the end of the loop iteration."""
    out = open(path, "a", buffering=1, encoding="ascii")  # noqa: SIM115 - the caller closes it
    out.write(HEADER)
    return out


class Probe:
    """Frames counted by the client's own handler; clocks read only at the first frame and
    at the last one (``bench/end_to_end.py``'s ``_Probe`` does the same in the App)."""

    def __init__(self, frames: int) -> None:
        self.target = frames
        self.frames = 0
        self.bars = 0
        self.first = (0.0, 0.0)
        self.last = (0.0, 0.0)

    def start(self) -> None:
        self.first = (time.perf_counter(), time.process_time())

    def finish(self) -> None:
        self.last = (time.perf_counter(), time.process_time())

    @property
    def done(self) -> bool:
        return self.frames >= self.target

    def report(self) -> None:
        """One JSON line: frames timed (all but the first), CPU and wall seconds between
        the first and the last frame, and closed bars written."""
        if not self.done or self.last == (0.0, 0.0):
            raise SystemExit(f"incomplete: {self.frames} of {self.target} frames")
        result = {
            "frames": self.frames - 1,
            "cpu": self.last[1] - self.first[1],
            "wall": self.last[0] - self.first[0],
            "bars": self.bars,
        }
        print(json.dumps(result), flush=True)
