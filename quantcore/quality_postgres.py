"""``quantcore check postgresql://…``: the data-quality report of a PostgresRecorder table.

The same report as for SQLite (:func:`quantcore.quality.check_sqlite`): holes, grid,
OHLC and ``close_time`` of every (symbol, interval), with the gaps the recorder wrote
down in ``<table>_gaps`` labelled as known. The DSN is shown with its password masked.
"""

from __future__ import annotations

from quantcore.gapfile import KnownGap
from quantcore.intervals import interval_ms
from quantcore.quality_report import CheckError, SeriesReport, analyze, explain, sql_rows
from quantcore.redact import redact
from quantcore.sinks import schema


def is_dsn(name: str) -> bool:
    return name.startswith(("postgresql://", "postgres://"))


def check_postgres(dsn: str, table: str = "bars") -> list[SeriesReport]:
    """One report per (symbol, interval) of ``table``; CheckError (one line, password
    masked) when the server or the table cannot be read."""
    where = f"{redact(dsn)}:{table}"
    try:
        import psycopg
    except ImportError as exc:
        raise CheckError(f"{where}: checking PostgreSQL needs {exc.name} "
                         "(pip install 'quantcore[sinks]')") from None  # fmt: skip
    try:
        quoted, gaps = schema.table_name(table), schema.gaps_table(table)
    except ValueError as exc:
        raise CheckError(f"{where}: {exc}") from None
    try:
        with psycopg.connect(dsn, connect_timeout=10) as conn:
            streams = conn.execute(schema.select_streams(quoted)).fetchall()
            has_gaps = conn.execute("SELECT to_regclass(%s)", (gaps,)).fetchone()
            reports = []
            for symbol, interval in streams:
                step = interval_ms(interval)
                report = SeriesReport(where, f"{symbol} {interval}", step)
                rows = conn.execute(schema.select_stream(quoted, "%s"), (symbol, interval))
                analyze(report, sql_rows(report, rows, step), interval)
                if has_gaps is not None and has_gaps[0] is not None:
                    query = schema.select_gaps(gaps, "%s")
                    found = conn.execute(query, (symbol, interval)).fetchall()
                    explain(report, [KnownGap(int(a), int(b), str(r)) for a, b, r in found])
                reports.append(report)
            return reports
    except (psycopg.Error, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckError(f"{where}: {redact(first)}") from None
