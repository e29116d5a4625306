"""Export one stream from a SqliteRecorder database as the CsvRecorder's CSV, byte for byte.

``python -m quantcore.sinks.export --db data/bars.sqlite --symbol BTCUSDT --interval 1m``
writes to stdout (or ``--out FILE``); the rows go through the CsvRecorder's own
:func:`~quantcore.consumers.csv_recorder.format_row`, so both files always agree, and
the stored strings are the exchange's, so the values are exact. A table from before
exact decimals (float columns) is refused with one line naming it.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.sinks import schema
from quantcore.sinks.rows import from_row
from quantcore.sinks.sqlite import check_table, connect


def export_csv(
    db: str | Path, symbol: str, interval: str, out: TextIO, *, table: str = "bars"
) -> int:
    """Write the header and every stored bar of (symbol, interval) to ``out``; returns rows."""
    conn = connect(db, read_only=True)
    try:
        quoted = schema.table_name(table)
        check_table(conn, quoted, db)
        rows = conn.execute(schema.select_stream(quoted, "?"), (symbol, interval))
        out.write(HEADER)
        count = 0
        for row in rows:
            out.write(format_row(from_row(row)))
            count += 1
        return count
    finally:
        conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the process exit code (2 for a missing or unreadable DB)."""
    parser = argparse.ArgumentParser(
        prog="python -m quantcore.sinks.export",
        description="Write one stream of a SqliteRecorder database as a quantcore CSV.",
    )
    parser.add_argument("--db", default="data/bars.sqlite", help="SQLite file (read-only)")
    parser.add_argument("--table", default="bars")
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    parser.add_argument("--interval", required=True, help="e.g. 1m")
    parser.add_argument("--out", default="-", help="CSV file to write, or - for stdout")
    args = parser.parse_args(argv)
    if not Path(args.db).is_file():
        print(f"export: {args.db}: no such database file", file=sys.stderr)
        return 2
    try:
        if args.out == "-":
            count = export_csv(args.db, args.symbol, args.interval, sys.stdout, table=args.table)
        else:
            with open(args.out, "w", encoding="ascii", newline="") as handle:
                count = export_csv(args.db, args.symbol, args.interval, handle, table=args.table)
    except (sqlite3.Error, ValueError, OSError) as exc:
        print(f"export: {args.db}: {exc}", file=sys.stderr)
        return 2
    print(f"export: {count} bars of {args.symbol} {args.interval}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
