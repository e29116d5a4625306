"""The ``.gaps`` sidecar of a recorded CSV: bar ranges missing on purpose, and why.

``BTCUSDT_1m.csv.gaps`` holds a header line, then one line per range:
``first_open,last_open,reason`` (open times written as the CSV writes them, UTC, both
inclusive; the reason is a :class:`~quantcore.events.GapReason` text such as
``skipped by backfill_limit`` or ``exchange gap (no data from Binance)``). The CsvRecorder
appends it from GapEvents; ``quantcore check`` reads it to label those holes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from quantcore.events import datetime_text, parse_datetime_ms

SUFFIX = ".gaps"
HEADER = "first_open,last_open,reason\n"


@dataclass(frozen=True, slots=True)
class KnownGap:
    """Bars opening ``first_ms`` .. ``last_ms`` (inclusive) are missing because ``reason``."""

    first_ms: int
    last_ms: int
    reason: str


class GapFileError(ValueError):
    """A sidecar line that cannot be read; the message names the file and the line."""


def sidecar(csv_path: Path) -> Path:
    """Where the known gaps of ``csv_path`` are written down."""
    return csv_path.with_name(csv_path.name + SUFFIX)


def format_gap(first_ms: int, last_ms: int, reason: str) -> str:
    return f"{datetime_text(first_ms)},{datetime_text(last_ms)},{reason}\n"


def append_gap(csv_path: Path, first_ms: int, last_ms: int, reason: str) -> Path:
    """Append one range (the header first if the file is new) in one write; returns the path.

    OSError propagates: the caller decides how loudly a failed note is reported.
    """
    path = sidecar(csv_path)
    line = format_gap(first_ms, last_ms, reason).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            line = HEADER.encode("ascii") + line
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def read_gaps(csv_path: Path) -> list[KnownGap]:
    """The ranges written down beside ``csv_path`` (none if there is no sidecar), by start."""
    path = sidecar(csv_path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as exc:
        raise GapFileError(f"{path}: cannot read: {exc}") from None
    lines = text.splitlines()
    if not lines or lines[0] + "\n" != HEADER:
        raise GapFileError(f"{path}: line 1 is not {HEADER.strip()!r}")
    gaps = []
    for number, line in enumerate(lines[1:], start=2):
        parts = line.split(",", 2)
        try:
            first, last = (parse_datetime_ms(p) for p in parts[:2])
            reason = parts[2]
        except (ValueError, IndexError):
            raise GapFileError(f"{path}: line {number}: {line[:80]!r} is not a gap") from None
        if last < first or not reason:
            raise GapFileError(f"{path}: line {number}: {line[:80]!r} is not a gap")
        gaps.append(KnownGap(first, last, reason))
    return sorted(gaps, key=lambda g: g.first_ms)
