"""The ``.gaps`` sidecar of a recorded CSV: bar ranges missing on purpose, and why.

``BTCUSDT_1m.csv.gaps`` holds a header line, then one line per range:
``first_open,last_open,reason`` (open times written as the CSV writes them, UTC, both
inclusive; the reason is a :class:`~quantcore.events.GapReason` text such as
``skipped by backfill_limit`` or ``exchange gap (no data from Binance)``). The CsvRecorder
appends it from GapEvents; ``quantcore check`` reads it to label those holes. A Parquet
store keeps the same file as ``_gaps.csv`` in each stream's folder (``_``: Hive readers skip it).
"""

from __future__ import annotations

import os
from dataclasses import astuple, dataclass
from pathlib import Path

from quantcore.events import datetime_text, parse_datetime_ms

SUFFIX = ".gaps"
STORE_NAME = "_gaps.csv"
"""The sidecar's name in a Parquet store's ``venue=/symbol=/interval=`` folder."""
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
    """Append one range to ``csv_path``'s sidecar (see :func:`append_to`); returns its path."""
    return append_to(sidecar(csv_path), first_ms, last_ms, reason)


def append_to(path: Path, first_ms: int, last_ms: int, reason: str, fsync: bool = False) -> Path:
    """Append one range to the gaps file ``path`` (the header first if the file is new) in
    one write, fsynced if asked. OSError propagates: the caller decides how loudly a failed
    note is reported."""
    line = format_gap(first_ms, last_ms, reason).encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if os.fstat(fd).st_size == 0:
            line = HEADER.encode("ascii") + line
        os.write(fd, line)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_gaps(csv_path: Path) -> list[KnownGap]:
    """The ranges written down beside ``csv_path`` (none if there is no sidecar), by start."""
    return read_from(sidecar(csv_path))


def read_from(path: Path) -> list[KnownGap]:
    """The ranges of the gaps file ``path`` (none if it does not exist), by start."""
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


def merge_into(path: Path, gaps: list[KnownGap], replace: bool = False) -> int:
    """Add to the gaps file ``path`` the ranges of ``gaps`` it lacks (with ``replace``, make
    it hold exactly ``gaps``), written whole: temporary name, fsync, rename. Returns the
    ranges added; GapFileError if the file there cannot be read."""
    held = [] if replace else read_from(path)
    added = [gap for gap in gaps if gap not in held]
    if not added and not (replace and path.exists()):
        return 0
    rows = sorted(held + added, key=lambda g: g.first_ms)
    if not rows:
        path.unlink()
        return 0
    temp = path.with_name(f".{path.name}.tmp")
    with temp.open("wb") as handle:
        handle.write((HEADER + "".join(format_gap(*astuple(g)) for g in rows)).encode("ascii"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return len(added)
