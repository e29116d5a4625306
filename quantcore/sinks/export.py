"""Export one stream from a SqliteRecorder database as the CsvRecorder's CSV, byte for byte.

``python -m quantcore export --db data/bars.sqlite --symbol BTCUSDT --interval 1m``
(also ``python -m quantcore.sinks.export``) writes to stdout (or ``--out FILE``), with a
progress bar on stderr when that is a terminal; the rows go through the CsvRecorder's own
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
from quantcore.progress import progress
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
        total = conn.execute(
            f'SELECT COUNT(*) FROM {quoted} WHERE symbol = ? AND "interval" = ?', (symbol, interval)
        ).fetchone()[0]
        rows = conn.execute(schema.select_stream(quoted, "?"), (symbol, interval))
        out.write(HEADER)
        count = 0
        with progress(int(total), f"export {symbol} {interval}") as shown:
            for row in rows:
                out.write(format_row(from_row(row)))
                count += 1
                if not count % 10_000:
                    shown.update(10_000)
            shown.update(count % 10_000)
        return count
    finally:
        conn.close()


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``quantcore export`` (and ``python -m quantcore.sinks.export``)."""
    parser.add_argument("--db", default="data/bars.sqlite", help="SQLite file (read-only)")
    parser.add_argument("--table", default="bars")
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    parser.add_argument("--interval", required=True, help="e.g. 1m")
    parser.add_argument("--out", default="-", help="CSV file to write, or - for stdout")


def run(args: argparse.Namespace) -> int:
    """Export as parsed; the process exit code (2 for a missing or unreadable DB)."""
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


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m quantcore.sinks.export`` entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m quantcore.sinks.export",
        description="Write one stream of a SqliteRecorder database as a quantcore CSV.",
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
