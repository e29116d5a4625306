"""Export one stream from a SqliteRecorder database as the CsvRecorder's CSV, byte for byte.

(``--to parquet`` converts a CSV or SQLite recording into a Parquet store instead:
:mod:`quantcore.sinks.parquet_export`.)

``python -m quantcore export --db data/bars.sqlite --symbol BTCUSDT --interval 1m``
(also ``python -m quantcore.sinks.export``) writes to stdout (or ``--out FILE``), with a
progress bar on stderr when that is a terminal; the rows go through the CsvRecorder's own
:func:`~quantcore.consumers.csv_recorder.format_row`, so both files always agree, and
the stored strings are the exchange's, so the values are exact. A table from before
exact decimals (float columns) is refused with one line naming it.

Nothing is destroyed: the database is checked before any file is touched; ``--out``
is refused when it exists (unless ``--force``), is the database itself, or is held by
a running quantcore writer; the CSV is written under a temporary name in the same
folder and renamed into place only when complete; a stream with no bars writes nothing
(exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TextIO

from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.filelock import holder, lock_path
from quantcore.progress import progress
from quantcore.sinks import schema
from quantcore.sinks.rows import from_row
from quantcore.sinks.sqlite import check_table, connect

EXIT_OK, EXIT_NO_BARS, EXIT_BAD_INPUT = 0, 1, 2


class ExportError(ValueError):
    """A refused export; ``str()`` is the one line shown, ``code`` the exit code."""

    def __init__(self, message: str, code: int = EXIT_BAD_INPUT) -> None:
        super().__init__(message)
        self.code = code


def export_csv(
    db: str | Path, symbol: str, interval: str, out: TextIO, *, table: str = "bars"
) -> int:
    """Write the header and every stored bar of (symbol, interval) to ``out``; returns rows."""
    conn = connect(db, read_only=True)
    try:
        quoted = schema.table_name(table)
        check_table(conn, quoted, db)
        total = _count(conn, quoted, symbol, interval)
        rows = conn.execute(schema.select_stream(quoted, "?"), (symbol, interval))
        out.write(HEADER)
        count = 0
        with progress(total, f"export {symbol} {interval}") as shown:
            for row in rows:
                out.write(format_row(from_row(row)))
                count += 1
                if not count % 10_000:
                    shown.update(10_000)
            shown.update(count % 10_000)
        return count
    finally:
        conn.close()


def count_bars(db: Path, symbol: str, interval: str, table: str = "bars") -> int:
    """Bars of the stream in the database; ExportError (exit 2) for an unusable database,
    (exit 1) for a stream it does not hold, naming the streams it does hold."""
    if not db.is_file():
        raise ExportError(f"{db}: no such database file")
    try:
        conn = connect(db, read_only=True)
        try:
            quoted = schema.table_name(table)
            check_table(conn, quoted, db)
            total = _count(conn, quoted, symbol, interval)
            held = [] if total else _streams(conn, quoted)
        finally:
            conn.close()
    except (sqlite3.Error, ValueError) as exc:
        raise ExportError(f"{db}: {exc}") from None
    if not total:
        shown = ", ".join(held[:10]) + (", ..." if len(held) > 10 else "") or "nothing"
        raise ExportError(
            f"{db}: no bars of {symbol} {interval} in table {table!r} (it holds: {shown}); "
            "nothing written",
            EXIT_NO_BARS,
        )
    return total


def _count(conn: sqlite3.Connection, quoted: str, symbol: str, interval: str) -> int:
    query = f'SELECT COUNT(*) FROM {quoted} WHERE symbol = ? AND "interval" = ?'
    return int(conn.execute(query, (symbol, interval)).fetchone()[0])


def _streams(conn: sqlite3.Connection, quoted: str) -> list[str]:
    return [
        f"{symbol} {interval}" for symbol, interval in conn.execute(schema.select_streams(quoted))
    ]


def check_target(out: Path, db: Path, force: bool) -> None:
    """Refuse an ``--out`` that would destroy something: the database (or its journal,
    WAL or lock files), a file a quantcore process is writing, a folder, or any
    existing file unless ``force``."""
    sources = [db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))]
    if any(_same(out, source) for source in [*sources, lock_path(db)]):
        raise ExportError(f"{out}: is the database being exported ({db}); choose another --out")
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; --out needs a file name")
    if not out.parent.is_dir():
        raise ExportError(f"{out}: folder {out.parent} does not exist")
    if out.exists() and not out.is_file():
        raise ExportError(f"{out}: is not a regular file; left as is (use --out - for stdout)")
    busy = holder(out)
    if busy is not None:
        raise ExportError(f"{out}: is being written by a quantcore process ({busy}); left as is")
    if out.exists() and not force:
        raise ExportError(f"{out}: already exists; left as is (--force replaces it)")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return a.resolve() == b.resolve()


def write_file(args: argparse.Namespace, db: Path, out: Path) -> int:
    """Export into a temporary file beside ``out``, then move it into place: ``out``
    is either untouched or complete. Without ``--force`` the move refuses a file that
    appeared meanwhile; with it, the old file stays locked against writers until replaced."""
    with _locked_target(out, args.force):
        fd, temp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        try:
            os.fchmod(fd, _mode(out))
            with open(fd, "w", encoding="ascii", newline="") as handle:
                count = export_csv(db, args.symbol, args.interval, handle, table=args.table)
                handle.flush()
                os.fsync(handle.fileno())
            if args.force:
                os.replace(temp, out)
            else:
                try:
                    os.link(temp, out)
                except FileExistsError:
                    raise ExportError(f"{out}: appeared while exporting; left as is") from None
                os.unlink(temp)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    return count


@contextlib.contextmanager
def _locked_target(out: Path, force: bool) -> Iterator[None]:
    """With ``--force``, hold an exclusive lock on the file being replaced (the lock a
    CsvRecorder takes), so a recorder starting meanwhile is refused rather than raced."""
    if not (force and out.exists()):
        yield
        return
    fd = os.open(out, os.O_RDONLY | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(
                f"{out}: is being written by a quantcore process; left as is"
            ) from None
        yield
    finally:
        os.close(fd)


def _mode(out: Path) -> int:
    """The replaced file's permissions, or what a plain ``open`` would give."""
    try:
        return out.stat().st_mode & 0o777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``quantcore export`` (and ``python -m quantcore.sinks.export``)."""
    parser.add_argument("--db", help="SQLite file (read-only; default data/bars.sqlite)")
    parser.add_argument("--table", default="bars")
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    parser.add_argument("--interval", required=True, help="e.g. 1m")
    parser.add_argument(
        "--to", choices=("csv", "parquet"), default="csv", help="what to write (default csv)"
    )
    parser.add_argument("--csv", help="with --to parquet: a recorded CSV to convert, not --db")
    parser.add_argument(
        "--venue", default="binance-spot", help="with --to parquet: the venue partition written"
    )
    parser.add_argument(
        "--out", default="-", help="CSV file to write, - for stdout; --to parquet: the store root"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace --out (a CSV, or the stream in a store) if it exists; never one in use",
    )


def pick_source(args: argparse.Namespace) -> bool:
    """``--db`` or ``--csv``, not both (False, one line on stderr); ``--db`` defaults to
    ``data/bars.sqlite``. Both exports (CSV here, ``--to parquet``) start with it."""
    if args.csv is not None and args.db is not None:
        print("export: give --db or --csv, not both", file=sys.stderr)
        return False
    args.db = args.db or "data/bars.sqlite"
    return True


def run(args: argparse.Namespace) -> int:
    """Export one stream as CSV after :func:`pick_source`; the exit code: 0, 1 when the
    stream has no bars (nothing is written), 2 for a bad database or a refused ``--out``
    (one line on stderr). ``--to parquet`` is :mod:`quantcore.sinks.parquet_export`."""
    if args.csv is not None:
        print("export: --csv is a source for --to parquet (it is a CSV already)", file=sys.stderr)
        return EXIT_BAD_INPUT
    db = Path(args.db)
    try:
        if args.out != "-":
            check_target(Path(args.out), db, args.force)
        count_bars(db, args.symbol, args.interval, args.table)
        if args.out == "-":
            count = export_csv(db, args.symbol, args.interval, sys.stdout, table=args.table)
        else:
            count = write_file(args, db, Path(args.out))
    except ExportError as exc:
        print(f"export: {exc}", file=sys.stderr)
        return exc.code
    except OSError as exc:
        print(f"export: {exc.filename or args.db}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (sqlite3.Error, ValueError) as exc:
        print(f"export: {args.db}: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"export: {count} bars of {args.symbol} {args.interval}", file=sys.stderr)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m quantcore.sinks.export`` entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m quantcore.sinks.export",
        description="Write one stream of a SqliteRecorder database as a quantcore CSV.",
    )
    configure_parser(parser)
    args = parser.parse_args(argv)
    if args.to == "parquet":
        print("export: --to parquet is `quantcore export --to parquet`", file=sys.stderr)
        return EXIT_BAD_INPUT
    return run(args) if pick_source(args) else EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
