"""One writer per file: an exclusive ``flock``, and a sidecar ``<file>.lock`` naming the PID.

The kernel drops the lock when the process ends (kill -9 included), so a stale lock
never blocks a restart; the sidecar file itself stays and is simply rewritten. A writer
that already holds the file open locks that descriptor itself (a recorder of 2,000
streams then holds 2,000 descriptors, not 4,000); otherwise the sidecar is locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class FileBusyError(OSError):
    """Another live process holds the lock; the message names the file and its PID."""


class WriterLock:
    """Held from :func:`lock_for_writing` until :meth:`release` (or process exit)."""

    __slots__ = ("fd", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self.fd = fd

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def lock_for_writing(path: Path, fd: int | None = None) -> WriterLock:
    """Lock ``path`` for this process or raise :class:`FileBusyError` naming the holder.

    ``fd``: an open descriptor of ``path`` to lock (it stays the caller's to close, and
    closing it releases the lock); without it the sidecar is opened and locked.
    """
    sidecar = lock_path(path)
    owned = fd is None
    target = os.open(sidecar, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644) if owned else fd
    assert target is not None
    try:
        fcntl.flock(target, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if owned:
            os.close(target)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise FileBusyError(
                f"{path} is being written by another quantcore process (pid {_holder(sidecar)})"
            ) from None
        raise
    pid = f"{os.getpid()}\n".encode()
    if owned:
        os.pwrite(target, pid, 0)
        os.ftruncate(target, len(pid))
        return WriterLock(path, target)
    sidecar.write_bytes(pid)
    return WriterLock(path, -1)


def _holder(sidecar: Path) -> str:
    try:
        return sidecar.read_bytes()[:32].decode("ascii", "replace").strip() or "unknown"
    except OSError:
        return "unknown"


def holder(path: Path) -> str | None:
    """Who writes ``path`` now: ``"pid N"`` when a live quantcore writer holds its lock
    (on the file itself, as CsvRecorder does, or on its sidecar, as SqliteRecorder does),
    else None. Creates nothing: a probe for tools that must not touch a file in use."""
    sidecar = lock_path(path)
    for candidate in (path, sidecar):
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return f"pid {_holder(sidecar)}"
            raise
        finally:
            os.close(fd)
    return None
