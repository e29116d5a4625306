"""A really small disk for disk-full tests: a 64 KiB tmpfs that can be filled and freed.

Mounting needs root; where it is refused, the same interface injects ENOSPC at the OS
boundary instead (``os.write`` to files under the folder while a marker file exists, in
this process and in subprocesses started with :meth:`SmallDisk.command`), and says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

MARKER = ".disk-full"


class SmallDisk:
    """``root`` is on the small disk; :meth:`fill` takes every free byte, :meth:`free` returns them."""

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

    def command(self) -> list[str]:
        """argv prefix that runs ``python -m quantcore`` against this disk."""
        return [sys.executable, "-m", "quantcore"]


class InjectedFullDisk(SmallDisk):
    """Fallback without mount rights: writes under ``root`` fail with ENOSPC while full."""

    def fill(self) -> None:
        (self.root / MARKER).touch()

    def free(self) -> None:
        (self.root / MARKER).unlink(missing_ok=True)

    def command(self) -> list[str]:
        code = (
            f"from tests.disk import inject; inject({str(self.root)!r}); "
            "from quantcore.cli import main; raise SystemExit(main())"
        )
        return [sys.executable, "-c", code]


def inject(root: str, patch: pytest.MonkeyPatch | None = None) -> None:
    """Make ``os.write`` fail with ENOSPC for files under ``root`` while its marker exists."""
    real_write = os.write
    marker = os.path.join(root, MARKER)

    def write(fd: int, data: bytes) -> int:
        if os.path.exists(marker) and os.readlink(f"/proc/self/fd/{fd}").startswith(root):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    if patch is None:
        os.write = write
    else:
        patch.setattr(os, "write", write)


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
        inject(str(root), monkeypatch)
        yield InjectedFullDisk(root)
        return
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)
