"""``quantcore upgrade ROOT``: a Parquet store of layout 1 rewritten in place as layout 2.

Layout 1 (quantcore before 2026-12-03) kept ``year=Y/month=MM/data.parquet`` and the open
month's ``_journal.csv`` beside it. Each month (its file plus the journal rows after it)
becomes ``year=Y/Y-MM.parquet`` (temporary name, fsync, rename), its folder is removed,
finished years are merged, and the marker says layout 2 last. Every venue of the store is
locked first, so no recorder writes meanwhile; an interrupted upgrade leaves whole files
and the layout-1 marker, and running it again finishes it. Values are copied, never
recomputed: the exact decimals, scales and floats of every bar stay as they were.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pyarrow as pa

from quantcore.filelock import FileBusyError, WriterLock, lock_for_writing
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout

EXIT_OK, EXIT_REFUSED = 0, 2
_OLD_DATA, _OLD_JOURNAL = "data.parquet", "_journal.csv"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="a Parquet store written by an earlier quantcore")


def upgrade_stream(stream: Path) -> int:
    """Every layout-1 month of one stream into its month file; returns months moved.

    The old file is rewritten under the new name (as the schema now has it: the columns
    every bar has are required) and deleted, then the old journal is renamed to the
    month's journal, so :func:`~.parquet_layout.compact_month` merges them as the
    recorder would. Each step leaves every bar in exactly one place, so a rerun after a
    crash between any two loses none: a month file already written is not written again."""
    moved = 0
    for folder in sorted(stream.glob("year=*/month=*")):
        part = layout.Part(folder.parent, int(folder.parent.name[5:]), int(folder.name[6:]))
        if (folder / _OLD_DATA).exists() and not part.data.exists():
            with fmt.open_ours(folder / _OLD_DATA) as opened:
                fmt.write_atomically(part.data, opened.read().cast(fmt.SCHEMA))
        for name in (_OLD_DATA, f".{_OLD_DATA}.tmp"):
            (folder / name).unlink(missing_ok=True)
        if (folder / _OLD_JOURNAL).exists():
            os.replace(folder / _OLD_JOURNAL, part.journal)
        layout.compact_month(part)
        folder.rmdir()  # anything else in it is not ours: refused (OSError), left as is
        fmt.fsync_dir(folder.parent)
        moved += 1
    newest = layout.newest_open_ms(stream)
    if newest is not None:
        layout.settle(stream, newest)
    return moved


def upgrade(root: Path) -> int:
    """Lock every venue, move every stream, then mark the store layout 2; returns months
    moved (0: already layout 2)."""
    if layout.store_layout(root) == fmt.STORE_FORMAT["layout"]:
        return 0
    locks: list[WriterLock] = []
    try:
        for venue in sorted(p.name[6:] for p in root.glob("venue=*")):
            try:
                locks.append(lock_for_writing(root / f"_venue={venue}"))
            except FileBusyError as exc:
                raise fmt.StoreError(str(exc)) from None
        moved = sum(upgrade_stream(s) for s in sorted(root.glob("venue=*/symbol=*/interval=*")))
        layout.write_marker(root)
        return moved
    finally:
        for lock in locks:
            lock.release()


def main(args: argparse.Namespace) -> int:
    """0: upgraded (or already layout 2); 2: not a store, a venue being written, or a
    file that is not ours (one line on stderr; whatever was moved is whole)."""
    root = Path(args.root)
    try:
        moved = upgrade(root)
    except (OSError, ValueError, pa.ArrowException) as exc:
        print(f"upgrade: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"upgrade: {root}: layout {fmt.STORE_FORMAT['layout']}, {moved} months moved",
          file=sys.stderr)  # fmt: skip
    return EXIT_OK
