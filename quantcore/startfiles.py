"""A refused start leaves nothing behind: no header-only CSV, no ``.lock``, no new folder.

Before the recorders start, :class:`NewFiles` notes which of the files they may create
(and their ``.lock`` sidecars) do not exist yet. If the start is then refused (a config
error found late: an unknown symbol, a port in use, a file held by another process),
:meth:`NewFiles.remove` deletes only those it finds still without data: a CSV holding
just the header, a SQLite file whose tables are empty, their lock and SQLite side files,
and the folders made for them if empty. Every file that existed before stays, byte for
byte.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path

from quantcore.component import Component
from quantcore.consumers.csv_recorder import HEADER, CsvPathError, CsvRecorder
from quantcore.filelock import lock_path
from quantcore.sinks.sqlite import SqliteRecorder

log = logging.getLogger(__name__)

_SQLITE_SIDES = ("-wal", "-shm", "-journal")


class NewFiles:
    """The recorders' files (and folders) that did not exist when the run began."""

    def __init__(self, components: Iterable[Component], streams: Sequence[tuple[str, str]]) -> None:
        self.csv: list[Path] = []
        self.sqlite: list[Path] = []
        self.locks: list[Path] = []
        self.folders: list[Path] = []
        for component in components:
            if isinstance(component, CsvRecorder):
                for key in streams:
                    with contextlib.suppress(CsvPathError):
                        self._note(component.path_for(*key), self.csv)
            elif isinstance(component, SqliteRecorder):
                self._note(component.path, self.sqlite)

    @classmethod
    def combined(cls, parts: Iterable[NewFiles | None]) -> NewFiles:
        """One set for several runs side by side (one per venue, sharing folders)."""
        whole = cls((), ())
        for part in parts:
            if part is not None:
                whole.csv += part.csv
                whole.sqlite += part.sqlite
                whole.locks += part.locks
                whole.folders += part.folders
        return whole

    def _note(self, path: Path, kind: list[Path]) -> None:
        lock = lock_path(path)
        if not lock.exists() and lock not in self.locks:
            self.locks.append(lock)
        if path.exists() or path in kind:
            return
        kind.append(path)
        folder = path.parent
        while not folder.exists() and folder not in self.folders:
            self.folders.append(folder)
            folder = folder.parent

    def remove(self) -> None:
        """Delete what this run created and left without data (call once all is closed)."""
        removed = []
        for path in self.csv:
            if _read(path) in (b"", HEADER.encode("ascii")):
                removed += _unlink(path)
        for path in self.sqlite:
            if _empty_database(path):
                removed += _unlink(path, *(path.with_name(path.name + s) for s in _SQLITE_SIDES))
        removed += _unlink(*self.locks)  # made by this run's writers, released by now
        for folder in sorted(self.folders, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if empty
                removed.append(folder)
        if removed:
            log.debug("refused start: removed %s", ", ".join(map(str, removed)))


def _read(path: Path) -> bytes | None:
    """The file's bytes, or None when it is missing or larger than a header."""
    try:
        if path.stat().st_size > len(HEADER):
            return None
        return path.read_bytes()
    except OSError:
        return None


def _empty_database(path: Path) -> bool:
    """True when ``path`` is a SQLite file whose every table is empty (never guessed)."""
    if not path.is_file():
        return False
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            for (name,) in tables.fetchall():
                quoted = '"' + str(name).replace('"', '""') + '"'
                if conn.execute(f"SELECT 1 FROM {quoted} LIMIT 1").fetchone():
                    return False
            return True
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def _unlink(*paths: Path) -> list[Path]:
    gone = []
    for path in paths:
        with contextlib.suppress(OSError):  # gone, or never possible (a file as folder)
            os.unlink(path)
            gone.append(path)
    return gone
