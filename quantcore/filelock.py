"""One writer per file: an exclusive ``flock`` on a sidecar ``<file>.lock`` holding the PID.

The kernel drops the lock when the process ends (kill -9 included), so a stale lock
never blocks a restart; the sidecar file itself stays and is simply locked again.
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


def lock_for_writing(path: Path) -> WriterLock:
    """Lock ``path`` for this process or raise :class:`FileBusyError` naming the holder."""
    sidecar = lock_path(path)
    fd = os.open(sidecar, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise FileBusyError(
                f"{path} is being written by another quantcore process (pid {holder})"
            ) from None
        raise
    pid = f"{os.getpid()}\n".encode()
    os.pwrite(fd, pid, 0)
    os.ftruncate(fd, len(pid))
    return WriterLock(path, fd)
