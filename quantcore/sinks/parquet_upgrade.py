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
import json
import os
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from quantcore.filelock import FileBusyError, WriterLock, lock_for_writing
from quantcore.sinks import parquet_format as fmt
from quantcore.sinks import parquet_layout as layout

EXIT_OK, EXIT_REFUSED = 0, 2
_OLD_DATA, _OLD_JOURNAL = "data.parquet", "_journal.csv"


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("root", help="a Parquet store written by an earlier quantcore")


def _layout_of(root: Path) -> int:
    """The marker's layout (1 when absent: the first stores had none); StoreError when
    ``root`` is not a store at all."""
    try:
        found = json.loads((root / fmt.MARKER).read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        raise fmt.StoreError(f"{root}: not a quantcore Parquet store (no {fmt.MARKER})") from None
    except ValueError:
        found = None
    if not isinstance(found, dict) or found.get("format") != fmt.FORMAT["format"]:
        raise fmt.StoreError(f"{root / fmt.MARKER}: not a quantcore store marker; left as is")
    return int(found.get("layout", 1))


def _old_month(folder: Path) -> pa.Table:
    """A layout-1 month: its file plus the journal's complete rows after it, as the store's
    schema (the same columns; values the schema requires must be present)."""
    tables = []
    last = -1
    if (folder / _OLD_DATA).exists():
        with fmt.open_ours(folder / _OLD_DATA) as opened:
            table = opened.read()
        tables.append(table.cast(fmt.SCHEMA))
        if table.num_rows:
            last = table.column("open_time")[-1].cast(pa.int64()).as_py()
    if (folder / _OLD_JOURNAL).exists():
        rows = fmt.read_journal(folder / _OLD_JOURNAL)
        rows = rows.filter(pc.greater(rows.column("open_time"), last))
        if rows.num_rows:
            tables.append(fmt.to_store_table(rows))
    return pa.concat_tables(tables) if tables else fmt.SCHEMA.empty_table()


def upgrade_stream(stream: Path) -> int:
    """Every layout-1 month of one stream into its month file; returns months moved."""
    moved = 0
    for folder in sorted(stream.glob("year=*/month=*")):
        year, month = int(folder.parent.name[5:]), int(folder.name[6:])
        table = _old_month(folder)
        if table.num_rows:
            fmt.write_atomically(layout.Part(folder.parent, year, month).data, table)
        for name in (_OLD_DATA, _OLD_JOURNAL, f".{_OLD_DATA}.tmp"):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()  # anything else in it is not ours: refused (OSError), left as is
        fmt.fsync_dir(folder.parent)
        moved += 1
    found = layout.parts(stream)
    newest = layout.last_open_ms(found[-1]) if found else None
    if newest is not None:
        layout.settle(stream, newest)
    return moved


def upgrade(root: Path) -> int:
    """Lock every venue, move every stream, then mark the store layout 2; returns months
    moved (0: already layout 2)."""
    if _layout_of(root) == fmt.STORE_FORMAT["layout"]:
        return 0
    locks: list[WriterLock] = []
    try:
        for venue in sorted(p.name[6:] for p in root.glob("venue=*")):
            try:
                locks.append(lock_for_writing(root / f"_venue={venue}"))
            except FileBusyError as exc:
                raise fmt.StoreError(str(exc)) from None
        moved = sum(upgrade_stream(s) for s in sorted(root.glob("venue=*/symbol=*/interval=*")))
        temp = root / f".{fmt.MARKER}.{os.getpid()}.tmp"
        temp.write_bytes(fmt.STORE_MARKER + b"\n")
        with temp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, root / fmt.MARKER)
        fmt.fsync_dir(root)
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
