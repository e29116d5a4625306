"""The REST side of the local exchange: the venue's market-data endpoints, weighed as Binance
weighs them (429, then escalating 418 bans, with Retry-After and the used-weight header)."""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from quantcore.feeds.binance.venues import Venue

from .formats import QUOTES, read_data
from .limits import RateWindow, Verdict
from .market import Market

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
_INT_RE = re.compile(r"^-?[0-9]{1,20}$")


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def error(code: int, msg: str, status: int = 400) -> web.Response:
    """Binance's error body `{"code": ..., "msg": ...}` with an HTTP status."""
    return json_response({"code": code, "msg": msg}, status)


class RestApi:
    """The venue's REST endpoints over `market`, within its realism profile's weight limit;
    what the limit did is counted in its `limits`."""

    def __init__(self, market: Market, venue: Venue) -> None:
        self.market, self.venue = market, venue
        self.realism, self.limits = market.realism, market.limits
        self._prefix = f"/{venue.root}/{venue.rest_version}"
        real = self.realism
        self._weights = RateWindow(real.weight_limit, real.weight_window, 60.0)
        self._info = _ExchangeInfo(
            list(market.sources),
            real.halted,
            real.exchange_info,
            self._rate_limits(),
            venue.status_field,
        )
        self._klines_served = 0

    def add_routes(self, app: web.Application) -> None:
        """Route the endpoints; `weigh` must be among the app's middlewares."""
        api = self._prefix
        app.router.add_get(f"{api}/ping", self._ping)
        app.router.add_get(f"{api}/time", self._time)
        app.router.add_get(f"{api}/klines", self._klines)
        app.router.add_get(f"{api}/exchangeInfo", self._exchange_info)

    @web.middleware
    async def weigh(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Charge REST weight per call, refuse over the limit (429, then 418 bans) and put
        `X-MBX-USED-WEIGHT-1M` on every /api answer (WebSocket paths pass through)."""
        path = request.path
        if not path.startswith(f"/{self.venue.root}/"):
            return await handler(request)
        self.limits.rest_calls[path] += 1
        cost = self._cost(request)
        verdict = self._weights.charge(time.monotonic(), cost)
        self.limits.max_weight_in_window = self._weights.max_used
        if verdict.status != 200:
            if verdict.status == 429:
                self.limits.rest_429 += 1
            else:
                self.limits.rest_418 += 1
            response = self._refusal(verdict, request.remote or "?")
            response.headers[WEIGHT_HEADER] = str(verdict.used)
            return response
        self.limits.rest_weight += cost
        try:
            answer = await handler(request)
        except web.HTTPException as exc:
            exc.headers[WEIGHT_HEADER] = str(verdict.used)
            raise
        answer.headers[WEIGHT_HEADER] = str(verdict.used)
        return answer

    def _cost(self, request: web.Request) -> int:
        """The request's weight by the venue's table (futures weigh klines by limit); other
        paths under the root cost 1 (assumed)."""
        endpoint = request.path.removeprefix(self._prefix + "/")
        if endpoint == "klines":
            raw = request.query.get("limit", "")
            return self.venue.klines_weight(int(raw) if raw.isdigit() else 500)
        if endpoint == "exchangeInfo":
            return self.venue.exchange_info_weight
        return self.venue.time_weight if endpoint == "time" else 1

    def _refusal(self, verdict: Verdict, ip: str) -> web.Response:
        """Binance's 429 (too many requests) or 418 (IP banned) answer with Retry-After."""
        if verdict.status == 429:
            window = self.realism.weight_window
            per = "1 MINUTE" if window == 60.0 else f"{window:g} SECONDS"
            msg = (
                f"Too many requests; current limit of IP({ip}) request weight is "
                f"{self._weights.limit or 0} request weight per {per}. Please use WebSocket "
                "Streams for live updates to avoid polling the API."
            )
        else:
            until = int((time.time() + verdict.retry_after) * 1000)
            msg = (
                f"Way too many requests; IP({ip}) banned until {until}. "
                "Please use WebSocket Streams for live updates to avoid bans."
            )
        response = error(-1003, msg, verdict.status)
        response.headers["Retry-After"] = verdict.retry_header
        return response

    def _rate_limits(self) -> list[dict[str, Any]]:
        """exchangeInfo `rateLimits` entry for the REST weight (none without a limit)."""
        limit = self.realism.weight_limit
        if limit is None:
            return []
        window = self.realism.weight_window
        interval, num = ("MINUTE", 1) if window == 60.0 else ("SECOND", max(1, round(window)))
        return [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": interval,
                "intervalNum": num,
                "limit": limit,
            }
        ]

    async def _ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def _time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": self.market.now_ms})

    @staticmethod
    def _int_param(request: web.Request, name: str) -> int | web.Response | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return None
        if not _INT_RE.match(raw):
            return error(
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        return int(raw)

    async def _klines(self, request: web.Request) -> web.Response:
        query = request.query
        for name in ("symbol", "interval"):
            if not query.get(name):
                return error(
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        symbol = query["symbol"].upper()
        if symbol not in self.market.sources:
            return error(-1121, "Invalid symbol.")
        interval = query["interval"]
        try:
            self.market.check_interval(symbol, interval)
        except ValueError:
            return error(-1120, "Invalid interval.")
        values: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            value = self._int_param(request, name)
            if isinstance(value, web.Response):
                return value
            values[name] = value
        limit = 500 if values["limit"] is None else values["limit"]
        if not 1 <= limit <= self.venue.klines_limit:
            return error(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = values["startTime"], values["endTime"]
        if start is not None and end is not None and start > end:
            return error(-1023, "Start time is greater than end time.")
        self._klines_served += 1
        as_of = self.market.now_ms - self.realism.rest_lag(self._klines_served)
        bars = self.market.rest_klines(symbol, interval, start, end, limit, as_of)
        return json_response([bar.rest_row() for bar in bars])

    async def _exchange_info(self, request: web.Request) -> web.Response:
        wanted: list[str] | None = None
        if "symbol" in request.query:
            wanted = [request.query["symbol"].upper()]
        elif "symbols" in request.query:
            try:
                parsed = orjson.loads(request.query["symbols"])
            except orjson.JSONDecodeError:
                parsed = None
            if not isinstance(parsed, list) or not all(isinstance(s, str) for s in parsed):
                return error(-1100, "Illegal characters found in parameter 'symbols'.")
            wanted = [s.upper() for s in parsed]
        body = self._info.render(self.market.now_ms, wanted)
        if body is None:
            return error(-1121, "Invalid symbol.")
        return web.Response(body=body, content_type="application/json")


class _ExchangeInfo:
    """exchangeInfo bodies: a real file's symbols (or generated minimal ones) with the
    played symbols TRADING and the halted ones BREAK; serverTime is filled in per call."""

    def __init__(
        self,
        played: list[str],
        halted: frozenset[str],
        path: Path | None,
        rate_limits: list[dict[str, Any]],
        status_field: str = "status",
    ) -> None:
        base: dict[str, Any] = {"rateLimits": rate_limits, "exchangeFilters": []}
        symbols: dict[str, dict[str, Any]] = {}
        if path is not None:
            base = orjson.loads(read_data(path))
            if rate_limits:
                kept = [r for r in base.get("rateLimits", []) if _not_weight(r)]
                base["rateLimits"] = [*rate_limits, *kept]
            symbols = {str(s["symbol"]): s for s in base.get("symbols", [])}
        status = status_field
        for name in played:
            symbols[name] = {**symbols.get(name, _symbol_info(name)), status: "TRADING"}
        for name in sorted(halted):
            symbols[name] = {**symbols.get(name, _symbol_info(name)), status: "BREAK"}
        if path is None:
            symbols = {n: symbols[n] for n in [*played, *sorted(halted - set(played))]}
        self.symbols = symbols
        head = {"timezone": base.get("timezone", "UTC")}
        self._head = orjson.dumps(head)[:-1] + b',"serverTime":'
        tail = {
            "rateLimits": base.get("rateLimits", []),
            "exchangeFilters": base.get("exchangeFilters", []),
        }
        self._middle = b"," + orjson.dumps(tail)[1:-1] + b',"symbols":'
        self._all = orjson.dumps(list(symbols.values()))

    def render(self, now_ms: int, wanted: list[str] | None) -> bytes | None:
        """The JSON body, all symbols or only `wanted` (None when one is unknown)."""
        if wanted is None:
            chosen = self._all
        else:
            if any(s not in self.symbols for s in wanted):
                return None
            chosen = orjson.dumps([self.symbols[s] for s in dict.fromkeys(wanted)])
        return b"".join((self._head, str(now_ms).encode(), self._middle, chosen, b"}"))


def _not_weight(limit: object) -> bool:
    return not (isinstance(limit, dict) and limit.get("rateLimitType") == "REQUEST_WEIGHT")


def _symbol_info(symbol: str) -> dict[str, Any]:
    """A minimal generated exchangeInfo entry for a symbol the file does not list."""
    base, quote = _split_symbol(symbol)
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "MARKET"],
        "icebergAllowed": False,
        "ocoAllowed": False,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [],
        "permissions": ["SPOT"],
    }


def _split_symbol(symbol: str) -> tuple[str, str]:
    symbol = symbol.split("_", 1)[0]
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4] or symbol, symbol[-4:]
