"""A really small disk for disk-full tests: a 64 KiB tmpfs that can be filled and freed.

Mounting needs root; where it is refused, the same interface injects ENOSPC at the OS
boundary instead (``os.write`` on files under the folder), and says so in the test log.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


class SmallDisk:
    """``root`` is on the small disk; :meth:`fill` takes every free byte, :meth:`free` returns them."""

    real = True

    def __init__(self, root: Path) -> None:
        self.root = root
        self.filler = root / "filler"

    def fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * 512):
                    pass
        finally:
            os.close(fd)

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


class InjectedFullDisk(SmallDisk):
    """Fallback without mount rights: ``os.write`` to files under ``root`` fails while full."""

    real = False

    def __init__(self, root: Path, patch: Callable[[Callable[[int, bytes], int]], None]) -> None:
        super().__init__(root)
        self.full = False
        real_write = os.write

        def write(fd: int, data: bytes) -> int:
            if self.full and os.readlink(f"/proc/self/fd/{fd}").startswith(str(root)):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_write(fd, data)

        patch(write)

    def fill(self) -> None:
        self.full = True

    def free(self) -> None:
        self.full = False


@contextlib.contextmanager
def small_disk(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SmallDisk]:
    root.mkdir(parents=True, exist_ok=True)
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(root)], capture_output=True
        )
        refused = mounted.stderr.decode().strip() if mounted.returncode else ""
    except OSError as exc:
        refused = str(exc)
    if refused:
        print(f"tmpfs mount refused ({refused}): injecting ENOSPC at os.write instead")
        yield InjectedFullDisk(root, lambda write: monkeypatch.setattr(os, "write", write))
        return
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
