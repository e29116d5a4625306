"""The WebSocket side of the local exchange: `Hub` fans market frames out to subscribers,
`WsEndpoint` accepts connections and applies Binance's methods, pings and limits to them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from .limits import RateWindow
from .market import Market
from .rest import error

_log = logging.getLogger(__name__)

_STREAM_RE = re.compile(r"^(?:[a-z0-9]+|![A-Za-z]+)@[A-Za-z0-9_@.\-]+$")
_METHODS = "`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
GOING_AWAY = 1001
POLICY_VIOLATION = 1008


@dataclass(eq=False, slots=True)
class Client:
    """One WebSocket connection: its socket, framing mode and subscriptions."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    combined: bool
    serial: int = 0
    streams: dict[str, None] = field(default_factory=dict)
    last_seen: float = field(default_factory=time.monotonic)
    incoming: deque[float] = field(default_factory=deque)
    retiring: bool = False

    def wrap(self, stream: str, payload: str) -> str:
        """The payload as this connection frames it (combined: in Binance's wrapper)."""
        return f'{{"stream":"{stream}","data":{payload}}}' if self.combined else payload

    def abort(self) -> None:
        """Reset the TCP connection (no close frame), as a crashing server would."""
        if self.transport is not None:
            self.transport.abort()


class Hub:
    """Subscriptions of all connections; fans each frame out, serialised once per stream."""

    def __init__(self, played: Iterable[str]) -> None:
        self.played = frozenset(played)
        self.clients: dict[Client, None] = {}
        self._subs: dict[str, dict[Client, None]] = {}
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

    def add(self, client: Client) -> None:
        self.clients[client] = None

    def subscribe(self, client: Client, stream: str) -> None:
        if stream in client.streams:
            return
        client.streams[stream] = None
        self._subs.setdefault(stream, {})[client] = None
        if stream in self.played:
            self._played_subs += 1
            self._listening.set()

    def unsubscribe(self, client: Client, stream: str) -> None:
        if client.streams.pop(stream, False) is None:
            subs = self._subs[stream]
            del subs[client]
            if not subs:
                del self._subs[stream]
            if stream in self.played:
                self._played_subs -= 1
                if not self._played_subs:
                    self._listening.clear()

    def remove(self, client: Client) -> None:
        for stream in list(client.streams):
            self.unsubscribe(client, stream)
        self.clients.pop(client, None)

    def abort_all(self) -> int:
        """Reset every connection; returns how many there were."""
        clients = list(self.clients)
        for client in clients:
            client.abort()
            self.remove(client)
        return len(clients)

    async def send(self, client: Client, text: str) -> bool:
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
                wrapped = wrapped or client.wrap(stream, payload)
                await self.send(client, wrapped)
            else:
                await self.send(client, payload)


class WsEndpoint:
    """The stream server of `market`: accepts connections into `hub` within its realism
    profile's limits and keeps them alive (pinged every `heartbeat` s, dropped after
    `pong_timeout` s of silence) until they retire."""

    def __init__(
        self, market: Market, max_streams: int, heartbeat: float | None, pong_timeout: float
    ) -> None:
        self.market = market
        self.realism, self.limits = market.realism, market.limits
        self.hub = Hub(market.streams)
        self._max_streams = min(self.realism.max_streams, max_streams)
        self._attempts = RateWindow(self.realism.attempt_limit, self.realism.attempt_window, 300.0)
        self._heartbeat = heartbeat
        self._pong_timeout = pong_timeout
        self._serial = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def add_routes(self, app: web.Application) -> None:
        for path in ("/ws", "/ws/{streams:.*}", "/stream"):
            app.router.add_get(path, self.handle)

    def start(self) -> None:
        """Start the keep-alive pings (after the port is bound)."""
        if self._heartbeat is not None:
            self.spawn(self._ping_loop(self._heartbeat), "quantcore.sim.heartbeat")

    async def stop(self) -> None:
        """End the background work and reset every connection."""
        tasks = list(self._tasks)
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.hub.abort_all()

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` in the background until it ends or the server stops."""
        task = asyncio.create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ping_loop(self, interval: float) -> None:
        """Binance's keep-alive: ping every connection each `interval` seconds and drop
        those that sent nothing (not even a pong) for `pong_timeout` seconds."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for client in list(self.hub.clients):
                if now - client.last_seen > self._pong_timeout:
                    client.abort()
                    self.hub.remove(client)
                    continue
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.ping()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        combined = request.path == "/stream"
        raw = (
            request.query.get("streams", "") if combined else request.match_info.get("streams", "")
        )
        refused = self._admit(request)
        if refused is not None:
            return refused
        names = [n for n in raw.split("/") if n]
        if len(names) > self._max_streams:
            return error(-1, f"Too many streams: {len(names)} > {self._max_streams}.")
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 16)
        if not ws.can_prepare(request).ok:
            return error(-1, "Expected a WebSocket upgrade.")
        transport = request.transport
        await ws.prepare(request)
        self._serial += 1
        self.limits.ws_accepted += 1
        client = Client(ws, transport, combined, self._serial)
        self.hub.add(client)
        for name in names:
            self.hub.subscribe(client, name)
        peer = request.remote or "?"
        shown = ",".join(names[:3]) + (f",... ({len(names)} streams)" if len(names) > 3 else "")
        _log.info("client %d connected from %s: %s", client.serial, peer, shown or "no streams")
        opened = time.monotonic()
        lifetime = self.realism.connection_lifetime
        if lifetime is not None:
            self.spawn(self._expire(client, lifetime), "quantcore.sim.lifetime")
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
                    if not await self.hub.send(client, self._method(client, msg.data)):
                        break
                elif msg.type == WSMsgType.PING:
                    with contextlib.suppress(ConnectionError, RuntimeError):
                        await ws.pong(msg.data)
        finally:
            self.hub.remove(client)
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
            response = error(-1003, "Too many connection attempts.", verdict.status)
            response.headers["Retry-After"] = verdict.retry_header
            return response
        max_url = self.realism.max_url
        if max_url is not None and len(request.raw_path) > max_url:
            self.limits.url_refused += 1
            return error(-1, f"URI too long: {len(request.raw_path)} > {max_url}.", 414)
        return None

    def _too_chatty(self, client: Client) -> bool:
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

    def _method(self, client: Client, text: str) -> str:
        """Answer a live-subscription request the way Binance's stream server does."""
        try:
            request = orjson.loads(text)
        except orjson.JSONDecodeError:
            return _reply_error(None, "Invalid JSON: expected value", code=3)
        if not isinstance(request, dict):
            return _reply_error(None, "Invalid request: expected a map")
        rid = request.get("id")
        if isinstance(rid, bool) or not isinstance(rid, int | str | None):
            return _reply_error(None, "Invalid request: request ID must be an unsigned integer")
        method, params = request.get("method"), request.get("params", [])
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
                self.hub.subscribe(client, name)
            return _reply(rid, None)
        if method == "UNSUBSCRIBE":
            for name in params:
                if isinstance(name, str):
                    self.hub.unsubscribe(client, name)
            return _reply(rid, None)
        if method == "LIST_SUBSCRIPTIONS":
            return _reply(rid, list(client.streams))
        if method == "SET_PROPERTY" and params[:1] == ["combined"] and len(params) == 2:
            if isinstance(params[1], bool):
                client.combined = params[1]
                return _reply(rid, None)
        elif method == "GET_PROPERTY" and params == ["combined"]:
            return _reply(rid, client.combined)
        elif method not in ("SET_PROPERTY", "GET_PROPERTY"):
            return _reply_error(
                rid, f"Invalid request: unknown variant `{method}`, expected one of {_METHODS}"
            )
        return orjson.dumps({"code": 0, "msg": "Unknown property", "id": rid}).decode()

    async def announce_shutdown(self, client: Client) -> None:
        """Send Binance's serverShutdown notice (a planned restart follows)."""
        body = f'{{"e":"serverShutdown","E":{self.market.now_ms}}}'
        if await self.hub.send(client, client.wrap("!serverShutdown", body)):
            self.limits.shutdown_notices += 1

    async def close_going_away(self, client: Client, after: float) -> None:
        """Close with a proper close frame (1001 'going away') after `after` wall s."""
        await asyncio.sleep(after)
        if not client.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await client.ws.close(code=GOING_AWAY, message=b"going away")

    async def _expire(self, client: Client, lifetime: float) -> None:
        """End a connection after its lifetime, announced by serverShutdown when the seeded
        draw for its serial says so (Binance: 24 h; the notice precedes planned restarts)."""
        await asyncio.sleep(lifetime)
        if client.retiring or client.ws.closed:
            return
        client.retiring = True
        lead = 0.0
        if self.realism.announces_shutdown(client.serial):
            await self.announce_shutdown(client)
            lead = self.realism.shutdown_lead
        self.limits.lifetime_closes += 1
        await self.close_going_away(client, lead)


def _reply(rid: object, result: object) -> str:
    return orjson.dumps({"result": result, "id": rid}).decode()


def _reply_error(rid: object, msg: str, code: int = 2) -> str:
    return orjson.dumps({"error": {"code": code, "msg": msg}, "id": rid}).decode()
