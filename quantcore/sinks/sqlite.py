"""SqliteRecorder: every closed bar in one SQLite table, for a single host without a server.

stdlib ``sqlite3`` runs in the event loop, which is fine because each commit is one
small batch in WAL mode (microseconds to a few ms); a busy database is not waited for
in the loop (short ``busy_timeout``) but retried later by the writer's backoff.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from quantcore.events import BarEvent, GapEvent, epoch_ms
from quantcore.filelock import WriterLock, lock_for_writing
from quantcore.gapfile import KnownGap
from quantcore.sinks import schema
from quantcore.sinks.base import BufferedSink
from quantcore.sinks.rows import to_row

log = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 50


def connect(path: str | Path, *, read_only: bool = False) -> sqlite3.Connection:
    """Open the database; read-only mode refuses to create a missing file."""
    if read_only:
        return sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create_table(conn: sqlite3.Connection, table: str, where: str | Path) -> None:
    """Create ``table`` if missing; refuse one whose prices are floats (FloatTableError).

    Prices and volumes are TEXT holding the exchange's strings: SQLite has no exact
    decimal type (its NUMERIC/DECIMAL affinity stores ``0.00001234`` as an 8-byte float),
    and TEXT keeps every digit, compares as stored and exports verbatim.
    """
    with conn:
        conn.execute(
            schema.create_table(table, integer="INTEGER", decimal="TEXT", suffix=" WITHOUT ROWID")
        )
    check_table(conn, table, where)


def check_table(conn: sqlite3.Connection, table: str, where: str | Path) -> None:
    """FloatTableError if ``table`` (quoted, as from schema.table_name) stores floats."""
    db, name = schema.split_name(table.replace('"', ""))
    row = conn.execute(
        "SELECT type FROM pragma_table_info(?, ?) WHERE name = 'open'", (name, db or "main")
    ).fetchone()
    if row is not None and str(row[0]).upper() != "TEXT":
        raise schema.FloatTableError(str(where), table, str(row[0]))


class SqliteRecorder(BufferedSink):
    """Upserts closed bars into ``table`` of the SQLite file ``path``.

    A batch is committed when ``batch_size`` bars wait or the oldest waited ``max_delay``
    seconds, and on stop. WAL + ``synchronous=NORMAL``: a process crash loses nothing
    committed; a power loss may lose the last commits, which the feed backfills.
    """

    venue_params = {"path": "folder"}

    def __init__(
        self,
        *,
        path: str = "data/bars.sqlite",
        table: str = "bars",
        name: str | None = None,
        **settings: float | str,
    ) -> None:
        super().__init__(name, settings)
        self.path = Path(path)
        self.table = schema.table_name(table)
        self.gaps_table = schema.gaps_table(table)
        self._insert = schema.insert(self.table, "?")
        self._conn: sqlite3.Connection | None = None
        self._lock: WriterLock | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect(self.path)
            try:
                create_table(conn, self.table, self.path)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    async def open(self) -> None:
        """Take the one-writer lock (before the database is touched), then open it."""
        if self._lock is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock = lock_for_writing(self.path)
        try:
            self._connection()
        except sqlite3.Error as exc:
            raise OSError(f"{self.path}: cannot open SQLite database: {exc}") from None

    def stored_resume_point(self, symbol: str, interval: str) -> int | None:
        row = (
            self._connection()
            .execute(schema.last_open_time(self.table, "?"), (symbol, interval))
            .fetchone()
        )
        return None if row is None or row[0] is None else int(row[0])

    async def read_last(self, symbol: str, interval: str) -> int | None:
        return self.stored_resume_point(symbol, interval)

    def destination(self) -> str:
        return f"sqlite {self.path.resolve()} {self.table}"

    def journal_path(self) -> Path:
        """Beside the database unless ``journal_dir`` says otherwise."""
        default = super().journal_path()
        return default if self.settings.journal_dir else self.path.parent / default.name

    async def write_batch(self, batch: list[BarEvent]) -> None:
        conn = self._connection()
        with conn:
            conn.executemany(self._insert, [to_row(bar) for bar in batch])

    def on_gap(self, gap: GapEvent) -> None:
        """Write the range down in ``<table>_gaps``, so ``quantcore check`` labels that hole
        with its reason (a failed note is logged, never fatal)."""
        first, last = epoch_ms(gap.first_open), epoch_ms(gap.last_open)
        try:
            conn = self._connection()
            with conn:
                conn.execute(schema.create_gaps_table(self.gaps_table, "INTEGER"))
                conn.execute(f"INSERT OR REPLACE INTO {self.gaps_table} VALUES (?, ?, ?, ?, ?)",
                             (gap.symbol, gap.interval, first, last, gap.reason.value))  # fmt: skip
        except sqlite3.Error as exc:
            log.error("%s: cannot write down the gap %s .. %s (%s): %s", self.path,
                      gap.first_open, gap.last_open, gap.reason.value, exc)  # fmt: skip

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None


def known_gaps(conn: sqlite3.Connection, table: str, symbol: str, interval: str
                 ) -> list[KnownGap]:  # fmt: skip
    """The known gaps the SqliteRecorder wrote down beside ``table`` (none: no such table)."""
    try:
        query = schema.select_gaps(schema.gaps_table(table), "?")
        rows = conn.execute(query, (symbol, interval))
    except sqlite3.OperationalError:
        return []
    return [KnownGap(int(first), int(last), str(reason)) for first, last, reason in rows]
