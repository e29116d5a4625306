"""Fixtures: one real PostgreSQL and one real Redis per test session, plus a dead port.

They are skipped only when the server binaries are not installed (Debian packages
``postgresql`` and ``redis-server``); any other failure to start them fails the tests.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator

import pytest

from tests.sinks.servers import PostgresServer, RedisServer, free_port, postgres_bin_dir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not installed: apt-get install postgresql"
        )
    server = PostgresServer(bin_dir)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed: apt-get install redis-server")
    server = RedisServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def dead_port() -> int:
    """A loopback port nothing listens on: connections are refused at once."""
    return free_port()


@pytest.fixture
def unique() -> str:
    """A per-test suffix for table names and stream prefixes on the shared servers."""
    return uuid.uuid4().hex[:10]
