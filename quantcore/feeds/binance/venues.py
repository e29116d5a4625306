"""Binance's kline venues as data: endpoints, limits and symbol rules, one entry each.

The feed, backfill, rate limiting and liveness logic are the same for every venue
(``feed.py``); only what is here differs. URLs and paths follow python-binance's own
constants (``BaseClient.API_URL``/``FUTURES_URL``/``FUTURES_COIN_URL``,
``BinanceSocketManager.STREAM_URL``/``FSTREAM_URL``/``DSTREAM_URL``) and Binance's
REST docs for the weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

SPOT_NAME = "binance-spot"
DEFAULT_ARCHIVE_URL = "https://data.binance.vision"
"""Binance's public kline archive of every venue (``exchange.archive_url``)."""


@dataclass(frozen=True, slots=True)
class Venue:
    """One Binance market's kline API.

    ``rest_url`` is the REST root the versioned paths are appended to
    (``https://fapi.binance.com/fapi`` + ``/v1/klines``), the form python-binance keeps.
    """

    name: str
    ws_url: str
    rest_url: str
    rest_version: str
    klines_limit: int
    """Largest ``limit`` the klines endpoint accepts (one backfill page)."""
    klines_weights: tuple[tuple[int, int], ...]
    """``(largest limit, weight)`` steps, ascending: a call weighs the first step its
    limit fits."""
    exchange_info_weight: int
    weight_per_minute: int
    """The documented REQUEST_WEIGHT per minute per IP."""
    max_streams: int
    """Streams one combined-stream connection may carry."""
    symbol_pattern: str
    exchange_info_by_symbols: bool = True
    """exchangeInfo takes ``symbols=[...]`` (spot); futures only answer the full list."""
    status_field: str = "status"
    """The exchangeInfo field holding TRADING (COIN-M: ``contractStatus``)."""
    time_weight: int = 1
    presets: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Named ``(ws_url, rest_url)`` alternatives, e.g. ``testnet``."""

    @property
    def root(self) -> str:
        """The last path segment of the REST root (``api``, ``fapi``, ``dapi``)."""
        return self.rest_url.rstrip("/").rsplit("/", 1)[-1]

    def klines_weight(self, limit: int) -> int:
        for most, weight in self.klines_weights:
            if limit <= most:
                return weight
        return self.klines_weights[-1][1]

    def endpoint(self, rest_url: str, name: str) -> str:
        """The URL of endpoint ``name`` under ``rest_url`` (the venue's root or an override)."""
        return f"{rest_url.rstrip('/')}/{self.rest_version}/{name}"

    def check_symbol(self, symbol: str) -> bool:
        return re.fullmatch(self.symbol_pattern, symbol) is not None


_FUTURES_WEIGHTS = ((99, 1), (499, 2), (1000, 5), (1500, 10))
"""Futures klines weigh by limit: [1,100) 1, [100,500) 2, [500,1000] 5, >1000 10."""

SPOT = Venue(
    name=SPOT_NAME,
    ws_url="wss://stream.binance.com:9443/",
    rest_url="https://api.binance.com/api",
    rest_version="v3",
    klines_limit=1000,
    klines_weights=((1000, 2),),
    exchange_info_weight=20,
    weight_per_minute=6000,
    max_streams=1024,
    symbol_pattern=r"[A-Z0-9]{2,20}",
    presets={
        "testnet": ("wss://stream.testnet.binance.vision/", "https://testnet.binance.vision/api"),
        "data": ("wss://data-stream.binance.vision/", "https://data-api.binance.vision/api"),
    },
)

USDM = Venue(
    name="binance-usdm",
    ws_url="wss://fstream.binance.com/",
    rest_url="https://fapi.binance.com/fapi",
    rest_version="v1",
    klines_limit=1500,
    klines_weights=_FUTURES_WEIGHTS,
    exchange_info_weight=1,
    weight_per_minute=2400,
    max_streams=200,
    symbol_pattern=r"[A-Z0-9]{2,20}(_[0-9]{6})?",
    exchange_info_by_symbols=False,
    presets={
        "testnet": ("wss://stream.binancefuture.com/", "https://testnet.binancefuture.com/fapi"),
    },
)

COINM = replace(
    USDM,
    name="binance-coinm",
    ws_url="wss://dstream.binance.com/",
    rest_url="https://dapi.binance.com/dapi",
    symbol_pattern=r"[A-Z0-9]{2,20}_(PERP|[0-9]{6})",
    status_field="contractStatus",
    presets={
        "testnet": ("wss://dstream.binancefuture.com/", "https://testnet.binancefuture.com/dapi"),
    },
)
"""COIN-M differs from USD-M only in its hosts, its symbols and where it puts the status."""

VENUES: dict[str, Venue] = {v.name: v for v in (SPOT, USDM, COINM)}
"""Binance's venues by config name."""
