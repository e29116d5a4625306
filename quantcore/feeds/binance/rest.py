"""BinanceRest: a venue's public REST endpoints over aiohttp, for every REST call of the
process. A call takes its weight from its host's budget (:mod:`.limits`) first; a 429/418
bans every caller for its ``Retry-After``; every failure is a :class:`BackfillError`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import aiohttp
import orjson

from quantcore.backoff import describe
from quantcore.feeds.base import FeedStats
from quantcore.feeds.binance.limits import RestLimits, rest_budget
from quantcore.feeds.binance.venues import Venue

log = logging.getLogger(__name__)

TIMEOUT = aiohttp.ClientTimeout(total=10)
"""Per request, as python-binance's ``REQUEST_TIMEOUT``."""


class BackfillError(RuntimeError):
    """A REST call failed; its caller retries on its own schedule, so no gap is skipped."""


class BinanceRest:
    """GETs ``venue``'s endpoints under ``rest_url``; counts calls in ``stats``."""

    def __init__(
        self, rest_url: str, venue: Venue, limits: RestLimits, stats: FeedStats | None = None
    ) -> None:
        self.rest_url = rest_url
        self.venue = venue
        self.budget = rest_budget(rest_url, limits)
        self.stats = stats or FeedStats()
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[Any]]:
        asked = {"symbol": symbol, "interval": interval, "startTime": start_ms, "endTime": end_ms}
        params = {name: value for name, value in asked.items() if value is not None}
        params["limit"] = limit
        weight = self.venue.klines_weight(limit)
        rows: list[list[Any]] = await self.get(
            "klines", weight, params, f"{symbol} {interval} klines"
        )
        return rows

    async def server_time(self) -> int:
        """The exchange's clock in epoch ms."""
        answer = await self.get("time", self.venue.time_weight, {}, "server time")
        return int(answer["serverTime"])

    async def exchange_info(self, symbols: list[str] | None = None) -> Any:
        """``exchangeInfo``, of ``symbols`` only if given."""
        params = {} if symbols is None else {"symbols": orjson.dumps(symbols).decode()}
        return await self.get("exchangeInfo", self.venue.exchange_info_weight, params)

    async def get(self, endpoint: str, weight: int, params: dict[str, Any], what: str = "") -> Any:
        """GET ``endpoint`` inside the budget; its JSON answer (``what`` names it in errors)."""
        what = what or endpoint
        budget = self.budget
        await budget.acquire(weight)
        self.stats.rest_calls += 1
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=TIMEOUT)
        url = self.venue.endpoint(self.rest_url, endpoint)
        try:
            async with self._session.get(url, params=params) as response:
                headers, status = response.headers, response.status
                used = headers.get("X-MBX-USED-WEIGHT-1M")
                if used is not None and used.isdigit():
                    budget.report_used(int(used))
                if status in (418, 429):
                    wait = retry_after(headers)
                    budget.ban(wait)
                    self.stats.rate_limited += 1
                    log.warning(
                        "%s: HTTP %d: nothing sent for %.0fs (Retry-After)", what, status, wait
                    )
                body = await response.read()
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise BackfillError(f"{what}: {describe(exc)}") from exc
        try:
            answer = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            raise BackfillError(f"{what}: HTTP {status}, not JSON: {body[:100]!r}") from None
        if not 200 <= status < 300:
            error = answer if isinstance(answer, dict) else {}
            raise BackfillError(f"{what}: HTTP {status} {error.get('code')} {error.get('msg')}")
        return answer


def retry_after(headers: Mapping[str, str]) -> float:
    """Seconds a 429/418 answer asks every caller to wait (60 when it names none)."""
    try:
        return float(headers.get("Retry-After") or 0) or 60.0
    except ValueError:
        return 60.0
