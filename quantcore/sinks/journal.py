"""Journal: the local, append-only spill file of a sink whose server is down.

When a sink's memory backlog is full, later items are appended here, one encoded line
each, and read back in order when the server returns; the file is removed once drained.
It is a buffer, not a record: a leftover journal (a crash) is discarded at start, because
the sink then resumes from its own last stored row and every later bar is fetched again.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Journal(Generic[T]):
    """Items appended at the end and read from the front, in order, through one file.

    :meth:`append` raises OSError when the file cannot take the item (disk full, no
    permission); the file then ends after the last complete line, so nothing read later
    is torn. ``len()`` is the number of items written and not yet read back.
    """

    def __init__(
        self, path: Path, encode: Callable[[T], bytes], decode: Callable[[bytes], T]
    ) -> None:
        self.path = path
        self._encode = encode
        self._decode = decode
        self._fd = -1
        self._size = 0
        self._read_at = 0
        self._count = 0
        self.peak = 0
        """The most items the journal held at once (for logs and tests)."""

    def __len__(self) -> int:
        return self._count

    def discard_leftover(self) -> None:
        """Remove a journal left by an earlier process (its bars are fetched again)."""
        with contextlib.suppress(FileNotFoundError):
            size = self.path.stat().st_size
            self.path.unlink()
            log.warning(
                "%s: removed a leftover journal of %d bytes; its bars are filled again "
                "from the sink's own last stored row",
                self.path,
                size,
            )

    def append(self, item: T) -> None:
        """Append one item (durable against a process crash: written to the OS at once)."""
        line = self._encode(item) + b"\n"
        if self._fd < 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
            self._fd = os.open(self.path, flags, 0o600)
            self._size = self._read_at = 0
        view = memoryview(line)
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(line)
        self._count += 1
        self.peak = max(self.peak, self._count)

    def read(self, limit: int, chunk: int = 1 << 20) -> list[T]:
        """Up to ``limit`` items from the front, in the order they were appended."""
        items: list[T] = []
        while len(items) < limit and self._read_at < self._size:
            data = os.pread(self._fd, min(chunk, self._size - self._read_at), self._read_at)
            end = data.rfind(b"\n")
            if end < 0:
                raise OSError(f"{self.path}: a journal line is longer than {chunk} bytes")
            for line in data[:end].split(b"\n"):
                if len(items) == limit:
                    break
                items.append(self._decode(line))
                self._read_at += len(line) + 1
        self._count -= len(items)
        if not self._count:
            self.remove()
        return items

    def remove(self) -> None:
        """Close and delete the file (drained, or abandoned at stop)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._size = self._read_at = self._count = 0
