"""The closed-bar table shared by the SQLite and PostgreSQL recorders, as SQL text.

One layout, keyed by (symbol, interval, open_time), so a bar can be stored once only;
replays and backfills hit ``ON CONFLICT DO NOTHING`` (first write wins, like the CSV
recorder, and no rewritten rows or dead tuples). Prices and volumes are exact decimals:
the exchange's strings (SQLite ``TEXT``) or ``NUMERIC`` (PostgreSQL), never floats.
"""

from __future__ import annotations

import re

from quantcore.sinks.rows import ROW_COLUMNS

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_TEXT = {"symbol", "interval"}
_INTEGER = {"open_time", "close_time", "trades", "event_time"}
_KEY = '(symbol, "interval", open_time)'


class FloatTableError(ValueError):
    """An existing table stores prices as floats (made by quantcore before exact decimals).

    Refused rather than migrated: its values were already rounded to floats, and mixing
    them with exact rows would make one column mean two things. The message names the
    table and what to do.
    """

    def __init__(self, where: str, table: str, column_type: str) -> None:
        super().__init__(
            f"{where}: table {table} stores prices as {column_type} (floats, from an older "
            "quantcore); rename or drop it, or configure another table, to record exact decimals"
        )


def table_name(name: str) -> str:
    """``table`` or ``schema.table`` validated and quoted; ValueError names a bad one."""
    parts = name.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.match(part) for part in parts):
        raise ValueError(f"table {name!r} is not 'name' or 'schema.name' (letters, digits, _)")
    return ".".join(f'"{part}"' for part in parts)


def _column(name: str) -> str:
    return f'"{name}"'


def split_name(name: str) -> tuple[str | None, str]:
    """``schema.table`` or ``table`` (already valid) → (schema or None, table), unquoted."""
    schema, _, table = name.rpartition(".")
    return (schema or None, table)


def create_table(table: str, *, integer: str, decimal: str, suffix: str = "") -> str:
    """``CREATE TABLE IF NOT EXISTS`` with the dialect's 64-bit integer and exact decimal types."""

    def kind(c: str) -> str:
        return "TEXT" if c in _TEXT else integer if c in _INTEGER else decimal

    columns = ", ".join(f"{_column(c)} {kind(c)} NOT NULL" for c in ROW_COLUMNS)
    return f"CREATE TABLE IF NOT EXISTS {table} ({columns}, PRIMARY KEY {_KEY}){suffix}"


def insert(table: str, placeholder: str) -> str:
    """Idempotent insert of one :func:`quantcore.sinks.rows.to_row` tuple."""
    names = ", ".join(_column(c) for c in ROW_COLUMNS)
    values = ", ".join([placeholder] * len(ROW_COLUMNS))
    return f"INSERT INTO {table} ({names}) VALUES ({values}) ON CONFLICT {_KEY} DO NOTHING"


def last_open_time(table: str, placeholder: str) -> str:
    """The newest open time of one stream (an index lookup on the primary key)."""
    return (
        f'SELECT max(open_time) FROM {table} WHERE symbol = {placeholder} AND "interval" = '
        f"{placeholder}"
    )


def select_stream(table: str, placeholder: str) -> str:
    """All bars of one stream in open-time order, columns as in ROW_COLUMNS."""
    names = ", ".join(_column(c) for c in ROW_COLUMNS)
    return (
        f'SELECT {names} FROM {table} WHERE symbol = {placeholder} AND "interval" = '
        f"{placeholder} ORDER BY open_time"
    )


def select_streams(table: str) -> str:
    """Every (symbol, interval) the table holds, sorted."""
    return f'SELECT DISTINCT symbol, "interval" FROM {table} ORDER BY symbol, "interval"'


def gaps_table(table: str) -> str:
    """The quoted table beside ``table`` (as given, unquoted) holding its known gaps."""
    return table_name(f"{table}_gaps")


def create_gaps_table(gaps: str, integer: str) -> str:
    """Ranges of bars missing on purpose, and why (:class:`~quantcore.events.GapEvent`):
    open times of the first and last missing bar (ms, inclusive)."""
    return (
        f'CREATE TABLE IF NOT EXISTS {gaps} (symbol TEXT NOT NULL, "interval" TEXT NOT NULL, '
        f"first_open {integer} NOT NULL, last_open {integer} NOT NULL, reason TEXT NOT NULL, "
        'PRIMARY KEY (symbol, "interval", first_open))'
    )


def insert_gap(gaps: str, placeholder: str) -> str:
    """Write down one range (symbol, interval, first_open, last_open, reason); a range
    starting at the same bar is replaced (the newer note is the better informed)."""
    values = ", ".join([placeholder] * 5)
    return (
        f'INSERT INTO {gaps} VALUES ({values}) ON CONFLICT (symbol, "interval", first_open) '
        "DO UPDATE SET last_open = excluded.last_open, reason = excluded.reason"
    )


def select_gaps(gaps: str, placeholder: str) -> str:
    """One stream's written-down ranges (first_open, last_open, reason), oldest first."""
    return (
        f"SELECT first_open, last_open, reason FROM {gaps} WHERE symbol = {placeholder} AND "
        f'"interval" = {placeholder} ORDER BY first_open'
    )
