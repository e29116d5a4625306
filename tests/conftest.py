"""Shared test fixtures."""

from __future__ import annotations

from typing import Any

import pytest

from tests.paths import WS_BTC, read_frames


@pytest.fixture(scope="session")
def btc_frames() -> list[dict[str, Any]]:
    if not WS_BTC.exists():
        pytest.fail(f"recorded data missing: {WS_BTC} (tests/data is part of the repository)")
    return read_frames(WS_BTC)


@pytest.fixture(params=["picows", "websockets", "python-binance"])
def transport(request: pytest.FixtureRequest) -> str:
    """Every way of reading the stream (``feed.transport``) must pass the same tests."""
    value: str = request.param
    return value
