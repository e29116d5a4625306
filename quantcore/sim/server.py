"""`LocalExchange`: Binance's public spot market-data API (REST + WebSocket) on 127.0.0.1.

One aiohttp server on one port serves `/api/v3/*` and the `/ws/...` and `/stream?streams=`
WebSocket endpoints closely enough that python-binance's AsyncClient and
BinanceSocketManager work unchanged once their base URLs point here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import orjson
from aiohttp import WSMsgType, web

from quantcore.feeds.binance.venues import SPOT, Venue

from .archive import ArchiveServer
from .formats import QUOTES, read_data
from .generator import RandomWalkSource
from .klines import Bar, Kline, bucket_start, interval_ms
from .limits import Limits, RateWindow, Verdict
from .market import Market, stream_name
from .realism import Realism
from .sources import KlineSource

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_STREAMS = 1024
"""Binance's limit of streams per connection."""

ERROR_PAYLOAD = (
    '{"error":{"code":2,"msg":"Invalid request: missing field `method` at line 1 column 2"},'
    '"id":null}'
)
"""What Binance's stream server answers to a JSON message without `method`."""

_STREAM_RE = re.compile(r"^(?:[a-z0-9]+|![A-Za-z]+)@[A-Za-z0-9_@.\-]+$")
_MAX_URL = 1 << 17
_INT_RE = re.compile(r"^-?[0-9]{1,20}$")
_METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"

MalformedKind = Literal["not_json", "missing_fields", "wrong_types"]

REST_WEIGHTS = {
    "/api/v3/klines": 2,
    "/api/v3/time": 1,
    "/api/v3/ping": 1,
    "/api/v3/exchangeInfo": 20,
}
"""Spot's request weight per endpoint (rest-api.md); other paths under /api cost 1
(assumed). Every venue weighs by its :class:`Venue` data: klines by limit on futures."""

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
BASE_BAN_S = 120.0
"""Binance's first IP ban lasts 2 minutes; compressed windows shrink it in proportion."""
GOING_AWAY = 1001
POLICY_VIOLATION = 1008


class _Client:
    """One WebSocket connection: its socket, framing mode and subscriptions."""

    __slots__ = (
        "combined",
        "incoming",
        "last_seen",
        "retiring",
        "serial",
        "streams",
        "transport",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport | None,
        combined: bool,
        serial: int = 0,
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.combined = combined
        self.serial = serial
        self.streams: dict[str, None] = {}
        self.last_seen = time.monotonic()
        self.incoming: deque[float] = deque()
        self.retiring = False


class _Hub:
    """Subscriptions of all connections; fans each frame out, serialised once per stream."""

    def __init__(self, played: Iterable[str]) -> None:
        self.played = frozenset(played)
        self.clients: dict[_Client, None] = {}
        self._subs: dict[str, dict[_Client, None]] = {}
        self._played_subs = 0
        self._listening = asyncio.Event()
        self.stall_until = 0.0

    def wants(self, stream: str) -> bool:
        if stream not in self._subs:
            return False
        if self.stall_until:
            if time.monotonic() < self.stall_until:
                return False
            self.stall_until = 0.0
        return True

    async def wait_listening(self) -> None:
        if not self._listening.is_set():
            await self._listening.wait()

    def add(self, client: _Client) -> None:
        self.clients[client] = None

    def subscribe(self, client: _Client, stream: str) -> None:
        if stream in client.streams:
            return
        client.streams[stream] = None
        self._subs.setdefault(stream, {})[client] = None
        if stream in self.played:
            self._played_subs += 1
            self._listening.set()

    def unsubscribe(self, client: _Client, stream: str) -> None:
        if client.streams.pop(stream, False) is None:
            subs = self._subs[stream]
            del subs[client]
            if not subs:
                del self._subs[stream]
            if stream in self.played:
                self._played_subs -= 1
                if not self._played_subs:
                    self._listening.clear()

    def remove(self, client: _Client) -> None:
        for stream in list(client.streams):
            self.unsubscribe(client, stream)
        self.clients.pop(client, None)

    async def send(self, client: _Client, text: str) -> bool:
        """Send one text frame; a failed send drops the client (its handler ends soon)."""
        if client.ws.closed:
            return False
        try:
            await client.ws.send_str(text)
        except (ConnectionError, RuntimeError):
            self.remove(client)
            return False
        return True

    async def publish(self, stream: str, payload: str) -> None:
        subs = self._subs.get(stream)
        if not subs:
            return
        wrapped = None
        for client in list(subs):
            if client.combined:
                if wrapped is None:
                    wrapped = f'{{"stream":"{stream}","data":{payload}}}'
                await self.send(client, wrapped)
            else:
                await self.send(client, payload)


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(code: int, msg: str, status: int = 400) -> web.Response:
    return _json({"code": code, "msg": msg}, status)


def _split_symbol(symbol: str) -> tuple[str, str]:
    symbol = symbol.split("_", 1)[0]
    for quote in QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    return symbol[:-4] or symbol, symbol[-4:]


class LocalExchange:
    """A local Binance spot market-data exchange (klines only) bound to 127.0.0.1.

    Give replay sources (`ReplaySource`) and/or symbols (served by `RandomWalkSource` with
    `seed`). `speed=None` plays as fast as clients read (pausing while nobody subscribes);
    a number plays that many market seconds per wall second. Like Binance, connections are
    pinged every `heartbeat` s and dropped after `pong_timeout` s without a pong.
    `realism` makes it as unkind as Binance (None: `Realism()`, the kind exchange); what
    its limits did is counted in `limits`.
    """

    def __init__(
        self,
        sources: Iterable[KlineSource] = (),
        *,
        symbols: Iterable[str] = (),
        intervals: Sequence[str] | str | None = None,
        seed: int = 0,
        speed: float | None = None,
        start_ms: int | None = None,
        history_bars: int = 0,
        updates_per_bar: int | None = None,
        port: int = 0,
        heartbeat: float | None = 20.0,
        pong_timeout: float = 60.0,
        realism: Realism | None = None,
        venue: Venue = SPOT,
    ) -> None:
        self.venue = venue
        """Whose paths, klines limit, weights and exchangeInfo this exchange serves."""
        self._prefix = f"/{venue.root}/{venue.rest_version}"
        self.realism = realism or Realism()
        self.limits = Limits()
        chosen = list(sources)
        wanted = [intervals] if isinstance(intervals, str) else list(intervals or [])
        have = {s.symbol for s in chosen}
        names = [s.upper() for s in symbols] or ([] if chosen else ["BTCUSDT"])
        for name in dict.fromkeys(names):
            if name not in have:
                chosen.append(RandomWalkSource(name, "1m", seed))
        self.market = Market(
            chosen,
            wanted or None,
            speed=speed,
            start_ms=start_ms,
            history_bars=history_bars,
            updates_per_bar=updates_per_bar,
            realism=self.realism,
            limits=self.limits,
        )
        self._hub = _Hub(self.market.streams)
        self.archive = ArchiveServer(self.market, venue)
        """The public archive of its own bars (``/data/...``, see :mod:`.archive`)."""
        real = self.realism
        origin = time.monotonic()
        self._weights = RateWindow(
            real.weight_limit, real.weight_window, BASE_BAN_S * real.weight_window / 60.0, origin
        )
        self._attempts = RateWindow(
            real.attempt_limit,
            real.attempt_window,
            BASE_BAN_S * real.attempt_window / 300.0,
            origin,
        )
        self._info = _ExchangeInfo(
            list(self.market.sources),
            real.halted,
            real.exchange_info,
            self._rate_limits(),
            venue.status_field,
        )
        self._serial = 0
        self._klines_served = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._heartbeat = heartbeat
        self._pong_timeout = pong_timeout
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._requested_port = port
        self._port: int | None = None
        self._runner: web.AppRunner | None = None
        self._market_task: asyncio.Task[None] | None = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> LocalExchange:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Bind the port and start the market clock and playback (once per instance)."""
        if self._started:
            raise RuntimeError("a LocalExchange starts once; use restart() to rebind")
        self._started = True
        await self._start_web(self._requested_port)
        self.market.start_clock()
        self._market_task = asyncio.create_task(
            self.market.run(self._hub), name="quantcore.sim.market"
        )
        self._market_task.add_done_callback(_report_failure)

    async def stop(self) -> None:
        """Stop playback, abort every connection and release the port (idempotent).

        Re-raises an exception that ended the playback task, so tests see market bugs.
        """
        task, self._market_task = self._market_task, None
        try:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await self._stop_web()

    async def _start_web(self, port: int) -> None:
        app = web.Application(middlewares=[self._weigh])
        api = self._prefix
        app.router.add_get(f"{api}/ping", self._ping)
        app.router.add_get(f"{api}/time", self._time)
        app.router.add_get(f"{api}/klines", self._klines)
        app.router.add_get(f"{api}/exchangeInfo", self._exchange_info)
        app.router.add_get("/ws", self._ws)
        app.router.add_get("/ws/{streams:.*}", self._ws)
        app.router.add_get("/stream", self._ws)
        self.archive.add_routes(app)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            max_line_size=_MAX_URL,  # a combined URL with 1024 streams is ~40 kB
        )
        await runner.setup()
        site = web.TCPSite(runner, HOST, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = site.port
        if self._heartbeat is not None:
            self._heartbeat_task = asyncio.create_task(
                self._ping_loop(self._heartbeat), name="quantcore.sim.heartbeat"
            )

    async def _stop_web(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        task, self._heartbeat_task = self._heartbeat_task, None
        tasks = [t for t in (task, *self._tasks) if t is not None]
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._abort_all()
        await runner.cleanup()

    async def _ping_loop(self, interval: float) -> None:
        """Binance's keep-alive: ping every connection each `interval` seconds and drop
        those that sent nothing (not even a pong) for `pong_timeout` seconds."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for client in list(self._hub.clients):
                if now - client.last_seen > self._pong_timeout:
                    if client.transport is not None:
                        client.transport.abort()
                    self._hub.remove(client)
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.ping()

    def _abort_all(self) -> int:
        clients = list(self._hub.clients)
        for client in clients:
            if client.transport is not None:
                client.transport.abort()
            self._hub.remove(client)
        return len(clients)

    # -- addresses and ground truth --------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (stable across `restart`)."""
        if self._port is None:
            raise RuntimeError("LocalExchange not started")
        return self._port

    @property
    def ws_url(self) -> str:
        """Value for `BinanceSocketManager.STREAM_URL` (keeps the trailing slash)."""
        return f"ws://{HOST}:{self.port}/"

    @property
    def rest_url(self) -> str:
        """The REST root (spot: `AsyncClient.API_URL`, python-binance appends /v3/...;
        futures: `.../fapi` or `.../dapi`, as `FUTURES_URL`/`FUTURES_COIN_URL`)."""
        return f"http://{HOST}:{self.port}/{self.venue.root}"

    @property
    def archive_url(self) -> str:
        """Base URL of the archive it serves (as ``https://data.binance.vision``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def streams(self) -> list[str]:
        """Names of the played streams, e.g. btcusdt@kline_1m."""
        return list(self.market.streams)

    @property
    def now_ms(self) -> int:
        """Market clock in ms."""
        return self.market.now_ms

    @property
    def start_ms(self) -> int:
        """Market time at which playback starts; earlier bars are history."""
        return self.market.start_ms

    @property
    def finished(self) -> asyncio.Event:
        """Set when every replay has been played to its end."""
        return self.market.finished

    def closed_klines(self, symbol: str, interval: str, since_ms: int | None = None) -> list[Kline]:
        """Ground truth: bars closed by market now, from the bar containing since_ms
        (default: the playback start; pass an earlier time to include history)."""
        return [b.kline() for b in self.market.closed_bars(symbol.upper(), interval, since_ms)]

    async def wait_for_closed(
        self,
        symbol: str,
        interval: str,
        target: int,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> Kline:
        """Wait until a bar closed by the market clock: `target` is an open time, or (when
        below 1e11) a count of bars from the playback start. Raises TimeoutError."""
        bar = await self.market.wait_for_closed(symbol.upper(), interval, target, timeout)
        return bar.kline()

    # -- fault injection -------------------------------------------------------------------

    async def drop_connections(self) -> int:
        """Abort every WebSocket connection abruptly (TCP reset, no close frame).

        python-binance then queues `{"e":"error","type":"ConnectionClosedError",...}` and
        reconnects by itself after 1-2 s. Returns how many connections were dropped.
        """
        count = self._abort_all()
        await asyncio.sleep(0)
        return count

    def stall(self, seconds: float) -> None:
        """Send no market frames for `seconds` while connections stay open and pings are
        answered. The clock keeps running: bars closing meanwhile are never pushed and must
        be recovered over REST. (At speed=None the playback races on unseen meanwhile.)"""
        self._hub.stall_until = time.monotonic() + seconds

    async def send_malformed(self, kind: MalformedKind) -> int:
        """Send one malformed kline frame per subscribed stream to every subscriber.

        `not_json`: the first half of a real frame; `missing_fields`: a kline event without
        `E`, `k.c` and `k.x`; `wrong_types`: numbers as strings and vice versa (`E`, `k.t`,
        `k.n` strings, `k.o` a float, `k.x` "true"). Combined connections get the usual
        wrapper. Returns the number of frames sent.
        """
        if kind not in ("not_json", "missing_fields", "wrong_types"):
            raise ValueError(f"unknown malformed kind {kind!r}")
        sent = 0
        for client in list(self._hub.clients):
            for name in list(client.streams):
                stream = self.market.streams.get(name)
                if stream is None:
                    continue
                good = self._last_closed(stream.symbol, stream.interval, 0)[1]
                text = self._malform(kind, name, good, client.combined)
                sent += await self._hub.send(client, text)
        return sent

    async def send_duplicate_closed(self, symbol: str, interval: str) -> str:
        """Re-send the latest closed bar's `x:true` frame (identical text) to the stream's
        subscribers; returns the raw payload."""
        name, payload = self._last_closed(symbol.upper(), interval, 0)
        await self._hub.publish(name, payload)
        return payload

    async def send_out_of_order_closed(self, symbol: str, interval: str, bars_back: int = 2) -> str:
        """Re-send the `x:true` frame of the closed bar `bars_back` before the latest one
        (stale data arriving late); returns the raw payload."""
        name, payload = self._last_closed(symbol.upper(), interval, bars_back)
        await self._hub.publish(name, payload)
        return payload

    async def send_error_payload(self) -> int:
        """Send every connection Binance's error reply `ERROR_PAYLOAD` (never wrapped, like
        Binance's method responses). Returns the number of frames sent."""
        sent = 0
        for client in list(self._hub.clients):
            sent += await self._hub.send(client, ERROR_PAYLOAD)
        return sent

    async def server_shutdown(self, lead: float | None = None) -> int:
        """Send Binance's serverShutdown notice to every connection now, then close each
        (code 1001) after `lead` wall s (default `realism.shutdown_lead`) in the background.
        Returns the number of connections notified."""
        wait = self.realism.shutdown_lead if lead is None else lead
        clients = [c for c in self._hub.clients if not c.retiring]
        for client in clients:
            client.retiring = True
            await self._notify_shutdown(client)
        for client in clients:
            self._spawn(self._close_going_away(client, wait), "quantcore.sim.shutdown")
        return len(clients)

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` in the background until it ends or the server stops."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify_shutdown(self, client: _Client) -> None:
        body = f'{{"e":"serverShutdown","E":{self.market.now_ms}}}'
        text = f'{{"stream":"!serverShutdown","data":{body}}}' if client.combined else body
        if await self._hub.send(client, text):
            self.limits.shutdown_notices += 1

    async def _close_going_away(self, client: _Client, after: float) -> None:
        """Close with a proper close frame (1001 'going away') after `after` wall s."""
        await asyncio.sleep(after)
        if not client.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.close(code=GOING_AWAY, message=b"going away")

    async def _expire(self, client: _Client, lifetime: float) -> None:
        """End a connection after its lifetime, announced by serverShutdown when the seeded
        draw for its serial says so (Binance: 24 h; the notice precedes planned restarts)."""
        await asyncio.sleep(lifetime)
        if client.retiring or client.ws.closed:
            return
        client.retiring = True
        lead = 0.0
        if self.realism.announces_shutdown(client.serial):
            await self._notify_shutdown(client)
            lead = self.realism.shutdown_lead
        self.limits.lifetime_closes += 1
        await self._close_going_away(client, lead)

    async def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the HTTP/WS server (listener closed, connections aborted) and start it again
        on the same port after `down_seconds`; the market clock and history are unaffected."""
        await self._stop_web()
        await asyncio.sleep(down_seconds)
        await self._start_web(self.port)

    def _last_closed(self, symbol: str, interval: str, bars_back: int) -> tuple[str, str]:
        name = stream_name(symbol, interval)
        if name not in self.market.streams:
            raise KeyError(f"{name} is not played by this exchange")
        length = interval_ms(interval)
        end = bucket_start(self.market.now_ms, length) - 1
        bars: list[Bar] = self.market.rest_klines(symbol, interval, None, end, bars_back + 1)
        if len(bars) <= bars_back:
            raise LookupError(f"{name}: fewer than {bars_back + 1} closed bars")
        return name, self.market.closed_frame(symbol, interval, bars[-1 - bars_back])

    @staticmethod
    def _malform(kind: MalformedKind, stream: str, good: str, combined: bool) -> str:
        if kind == "not_json":
            text = f'{{"stream":"{stream}","data":{good}}}' if combined else good
            return text[: len(text) // 2]
        event: dict[str, Any] = orjson.loads(good)
        k = event["k"]
        if kind == "missing_fields":
            del event["E"], k["c"], k["x"]
        else:
            event["E"], k["t"], k["n"] = str(event["E"]), str(k["t"]), str(k["n"])
            k["o"], k["x"] = float(k["o"]), "true"
        body = orjson.dumps(event).decode()
        return f'{{"stream":"{stream}","data":{body}}}' if combined else body

    # -- REST ------------------------------------------------------------------------------

    async def _ping(self, request: web.Request) -> web.Response:
        return _json({})

    async def _time(self, request: web.Request) -> web.Response:
        return _json({"serverTime": self.market.now_ms})

    def _int_param(self, request: web.Request, name: str) -> int | web.Response | None:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return None
        if not _INT_RE.match(raw):
            return _error(
                -1100,
                f"Illegal characters found in parameter '{name}'; "
                "legal range is '^[0-9]{1,20}$'.",
            )
        return int(raw)

    async def _klines(self, request: web.Request) -> web.Response:
        query = request.query
        for name in ("symbol", "interval"):
            if not query.get(name):
                return _error(
                    -1102,
                    f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.",
                )
        symbol = query["symbol"].upper()
        if symbol not in self.market.sources:
            return _error(-1121, "Invalid symbol.")
        interval = query["interval"]
        try:
            self.market.check_interval(symbol, interval)
        except ValueError:
            return _error(-1120, "Invalid interval.")
        values: dict[str, int | None] = {}
        for name in ("startTime", "endTime", "limit"):
            value = self._int_param(request, name)
            if isinstance(value, web.Response):
                return value
            values[name] = value
        limit = 500 if values["limit"] is None else values["limit"]
        if not 1 <= limit <= self.venue.klines_limit:
            return _error(-1130, "Data sent for parameter 'limit' is not valid.")
        start, end = values["startTime"], values["endTime"]
        if start is not None and end is not None and start > end:
            return _error(-1023, "Start time is greater than end time.")
        self._klines_served += 1
        as_of = self.market.now_ms - self.realism.rest_lag(self._klines_served)
        bars = self.market.rest_klines(symbol, interval, start, end, limit, as_of)
        return _json([bar.rest_row() for bar in bars])

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
                return _error(-1100, "Illegal characters found in parameter 'symbols'.")
            wanted = [s.upper() for s in parsed]
        body = self._info.render(self.market.now_ms, wanted)
        if body is None:
            return _error(-1121, "Invalid symbol.")
        return web.Response(body=body, content_type="application/json")

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

    @web.middleware
    async def _weigh(
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
            response = self._refusal(verdict, self._weights.limit or 0)
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
        """The request's weight: spot's table, or the venue's (klines by limit)."""
        venue = self.venue
        if venue is SPOT:
            return REST_WEIGHTS.get(request.path, 1)
        endpoint = request.path.removeprefix(self._prefix + "/")
        if endpoint == "klines":
            raw = request.query.get("limit", "")
            limit = int(raw) if raw.isdigit() else 500
            return venue.klines_weight(limit)
        if endpoint == "exchangeInfo":
            return venue.exchange_info_weight
        return 1

    def _refusal(self, verdict: Verdict, limit: int) -> web.Response:
        """Binance's 429 (too many requests) or 418 (IP banned) answer with Retry-After."""
        if verdict.status == 429:
            window = self.realism.weight_window
            per = "1 MINUTE" if window == 60.0 else f"{window:g} SECONDS"
            msg = (
                f"Too many requests; current limit of IP({HOST}) request weight is {limit} "
                f"request weight per {per}. Please use WebSocket Streams for live updates "
                "to avoid polling the API."
            )
        else:
            until = int((time.time() + verdict.retry_after) * 1000)
            msg = (
                f"Way too many requests; IP({HOST}) banned until {until}. "
                "Please use WebSocket Streams for live updates to avoid bans."
            )
        response = _error(-1003, msg, verdict.status)
        response.headers["Retry-After"] = verdict.retry_header
        return response

    # -- WebSocket -------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        combined = request.path == "/stream"
        raw = (
            request.query.get("streams", "") if combined else request.match_info.get("streams", "")
        )
        refused = self._admit(request)
        if refused is not None:
            return refused
        names = [n for n in raw.split("/") if n]
        limit = min(self.realism.max_streams, self.venue.max_streams)
        if len(names) > limit:
            return _error(-1, f"Too many streams: {len(names)} > {limit}.")
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 16)
        if not ws.can_prepare(request).ok:
            return _error(-1, "Expected a WebSocket upgrade.")
        transport = request.transport
        await ws.prepare(request)
        self._serial += 1
        self.limits.ws_accepted += 1
        client = _Client(ws, transport, combined, self._serial)
        self._hub.add(client)
        for name in names:
            self._hub.subscribe(client, name)
        peer = request.remote or "?"
        shown = ",".join(names[:3]) + (f",... ({len(names)} streams)" if len(names) > 3 else "")
        _log.info("client %d connected from %s: %s", client.serial, peer, shown or "no streams")
        opened = time.monotonic()
        lifetime = self.realism.connection_lifetime
        if lifetime is not None:
            self._spawn(self._expire(client, lifetime), "quantcore.sim.lifetime")
        try:
            async for msg in ws:
                client.last_seen = time.monotonic()
                if self._too_chatty(client):
                    self.limits.rate_disconnects += 1
                    client.retiring = True
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.close(code=POLICY_VIOLATION, message=b"Too many messages")
                    break
                if msg.type == WSMsgType.TEXT:
                    if not await self._hub.send(client, self._method(client, msg.data)):
                        break
                elif msg.type == WSMsgType.PING:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.pong(msg.data)
        finally:
            self._hub.remove(client)
            _log.info(
                "client %d disconnected after %.1fs", client.serial, time.monotonic() - opened
            )
        return ws

    def _admit(self, request: web.Request) -> web.Response | None:
        """Handshake checks: connection attempts per window per IP (429, then 418 bans;
        refused attempts are not counted) and the URL length (414, as measured by others:
        Binance documents no limit)."""
        self.limits.ws_attempts += 1
        verdict = self._attempts.charge(time.monotonic(), 1)
        self.limits.max_attempts_in_window = self._attempts.max_used
        if verdict.status != 200:
            if verdict.status == 429:
                self.limits.ws_refused_429 += 1
            else:
                self.limits.ws_refused_418 += 1
            response = _error(-1003, "Too many connection attempts.", verdict.status)
            response.headers["Retry-After"] = verdict.retry_header
            return response
        max_url = self.realism.max_url
        if max_url is not None and len(request.raw_path) > max_url:
            self.limits.url_refused += 1
            return _error(-1, f"URI too long: {len(request.raw_path)} > {max_url}.", 414)
        return None

    def _too_chatty(self, client: _Client) -> bool:
        """Whether this incoming message (any kind: text, ping, pong) exceeds
        `max_incoming_per_s` within the last second."""
        limit = self.realism.max_incoming_per_s
        if limit is None:
            return False
        now = client.last_seen
        seen = client.incoming
        seen.append(now)
        while now - seen[0] >= 1.0:
            seen.popleft()
        return len(seen) > limit

    def _method(self, client: _Client, text: str) -> str:
        """Answer a live-subscription request the way Binance's stream server does."""
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            return orjson.dumps(
                {"error": {"code": 3, "msg": "Invalid JSON: expected value"}, "id": None}
            ).decode()
        if not isinstance(request, dict):
            return '{"error":{"code":2,"msg":"Invalid request: expected a map"},"id":null}'
        rid = request.get("id")
        if isinstance(rid, bool) or not isinstance(rid, int | str | None):
            return _reply_error(None, "Invalid request: request ID must be an unsigned integer")
        method = request.get("method")
        params = request.get("params", [])
        if method is None:
            return _reply_error(rid, "Invalid request: missing field `method`")
        if not isinstance(params, list):
            return _reply_error(rid, "Invalid request: params must be an array")
        if method == "SUBSCRIBE":
            if not all(isinstance(p, str) and _STREAM_RE.match(p) for p in params):
                return _reply_error(rid, "Invalid request: invalid stream")
            limit = self.realism.max_streams
            if len(dict.fromkeys([*client.streams, *params])) > limit:
                return _reply_error(rid, f"Invalid request: more than {limit} streams")
            for name in params:
                self._hub.subscribe(client, name)
            return _reply(rid, None)
        if method == "UNSUBSCRIBE":
            for name in params:
                if isinstance(name, str):
                    self._hub.unsubscribe(client, name)
            return _reply(rid, None)
        if method == "LIST_SUBSCRIPTIONS":
            return _reply(rid, list(client.streams))
        if method == "SET_PROPERTY":
            if len(params) != 2 or params[0] != "combined" or not isinstance(params[1], bool):
                return orjson.dumps({"code": 0, "msg": "Unknown property", "id": rid}).decode()
            client.combined = params[1]
            return _reply(rid, None)
        if method == "GET_PROPERTY":
            if params != ["combined"]:
                return orjson.dumps({"code": 0, "msg": "Unknown property", "id": rid}).decode()
            return _reply(rid, client.combined)
        return _reply_error(
            rid, f"Invalid request: unknown variant `{method}`, expected one of {_METHODS}"
        )


def _report_failure(task: asyncio.Task[None]) -> None:
    """Log a playback crash at once (stop() re-raises it later)."""
    if not task.cancelled() and task.exception() is not None:
        _log.error("market playback failed", exc_info=task.exception())


def _reply(rid: object, result: object) -> str:
    return orjson.dumps({"result": result, "id": rid}).decode()


def _reply_error(rid: object, msg: str) -> str:
    return orjson.dumps({"error": {"code": 2, "msg": msg}, "id": rid}).decode()


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
