"""BinanceKlineFeed: kline WebSocket streams through python-binance, supervised.

Three independent jobs, so no one of them can stall another:

- one **supervisor** per connection: connect within the process-wide attempt budget,
  pump frames, judge liveness, hand over to a fresh connection before a planned close
  (``serverShutdown``, the 24 h lifetime), back off after failures;
- the **settler** (``settler.py``), one per feed: every closed bar the stream did not
  deliver (an ``x:true`` lost to a reconnect, withheld by the exchange, or never sent
  because a quiet bar had no trades) is fetched over REST and trusted only on evidence:
  REST already serving a later bar of the stream;
- the **sequencer** (``DataFeed.offer``): closed bars go out strictly in order, each once.

What Binance does not document, and what was assumed:

- REST klines come from a delayed data source (seconds, sometimes minutes behind the
  stream): its newest rows can still hold non-final values, so the last row of a REST
  answer is never trusted (see ``settler.py``); newer bars come from the live ``x:true``.
- Kline streams push only when something changed, so silence is not death: after
  ``stall_timeout`` without frames the supervisor asks REST whether the market moved
  (a newer bar with trades, or more trades than the stream showed) and reconnects only
  if it did; a quiet symbol never causes a reconnect.
- Combined-stream URLs over about 8,000 characters are refused (a third-party
  measurement), so streams are split across connections by URL length as well as by
  Binance's documented 1,024 streams.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import orjson
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from quantcore.backoff import describe
from quantcore.bus import EventBus
from quantcore.events import BAR_PARTIAL, BarEvent, FeedState, epoch_ms, from_epoch_ms
from quantcore.feeds.base import ReconnectPolicy, StreamKey
from quantcore.feeds.binance.clock import ExchangeClock
from quantcore.feeds.binance.codec import (
    KlineCodec,
    KlineParseError,
    is_error_payload,
    stream_name,
)
from quantcore.feeds.binance.forming import FormingBars
from quantcore.feeds.binance.limits import (
    ConnectionBudget,
    ConnectLimits,
    RestBudget,
    RestLimits,
    connection_budget,
    rest_budget,
)
from quantcore.feeds.binance.settler import (
    BackfillError,
    SettlingFeed,
    StreamState,
    StreamWait,
)
from quantcore.feeds.binance.transport import (
    SocketClosed,
    StreamSocket,
    Transport,
    open_socket,
)
from quantcore.feeds.binance.venues import SPOT, Venue
from quantcore.intervals import bar_open_ms, interval_ms

__all__ = ["BackfillError", "BinanceFeedSettings", "BinanceKlineFeed", "StreamWait"]

log = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024
"""Binance rejects combined-stream connections with more streams than this."""
EXCHANGE_INFO_SYMBOLS = 100
"""Up to this many symbols are asked for by name; more, and the full list is cheaper."""


class UnknownSymbolError(RuntimeError):
    """The exchange does not list a configured symbol; retrying cannot help."""


class StreamLost(RuntimeError):
    """The live connection ended (error payload, closed socket or stall); ``state`` says
    which, for the one status report the supervisor makes of it."""

    def __init__(self, detail: str, state: FeedState = FeedState.DISCONNECTED) -> None:
        super().__init__(detail)
        self.state = state


@dataclass(frozen=True, slots=True)
class BinanceFeedSettings:
    """Everything that differs between Binance venues is ``venue`` (endpoints, limits,
    symbols); between Binance and the local exchange, a URL here (empty: the venue's)."""

    ws_url: str = ""
    rest_url: str = ""
    venue: Venue = SPOT
    transport: Transport = "picows"
    """How frames are read: picows (default: the least CPU per frame through public API
    only, see README Performance), websockets directly, or python-binance's socket."""
    max_queue_size: int = 100_000
    stall_timeout: float = 10.0
    """Seconds without any frame before REST is asked whether the market moved."""
    backfill_limit: int | None = None
    """Opt-in cap on the first catch-up (bars); None: every bar since the resume point.
    Skipped bars are announced as a GapEvent (the CSV's ``.gaps`` sidecar)."""
    warmup_bars: int = 0
    streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    max_url_chars: int = 8000
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    healthy_after: float = 60.0
    """A connection must stay up this long before the reconnect backoff starts over."""
    settle: float = 0.0
    """Optional extra margin: seconds of exchange time a REST row's close must also be old
    before it is trusted (the evidence, REST serving a later bar, is always required)."""
    poll: float = 1.0
    """Seconds between the settler's checks for bars the stream did not deliver."""
    probe_streams: int = 3
    """How many of a silent connection's streams REST is asked about."""
    max_connection_age: float = 23.5 * 3600
    """Hand over to a fresh connection before Binance's 24 h limit closes this one."""
    connect_limits: ConnectLimits = field(default_factory=ConnectLimits)
    rest_limits: RestLimits | None = None
    """None: half the venue's documented weight per minute."""

    def __post_init__(self) -> None:
        if not self.ws_url:
            object.__setattr__(self, "ws_url", self.venue.ws_url)
        if not self.rest_url:
            object.__setattr__(self, "rest_url", self.venue.rest_url)
        if self.rest_limits is None:
            weight = self.venue.weight_per_minute // 2
            object.__setattr__(self, "rest_limits", RestLimits(weight))


@dataclass(slots=True, eq=False)
class _Link:
    """One open socket and the task pumping it."""

    socket: StreamSocket
    pump: asyncio.Task[None] | None = None
    frames: int = 0
    opened: float = 0.0


@dataclass(slots=True, eq=False)
class _Connection:
    streams: list[StreamState]
    names: list[str]
    label: str
    last_frame: float = 0.0
    handover: str | None = None
    """Why the exchange asked us to move (``serverShutdown``), until the handover."""
    link: _Link | None = None
    """The socket being pumped now (replaced by a handover)."""
    state: FeedState = FeedState.CONNECTING
    reconnects: int = 0
    stalls: int = 0
    last_data: float = 0.0
    """Monotonic time of the last frame, kept across reconnects (0: none yet)."""
    quiet_at: float = 0.0
    """When a liveness probe last found the market quiet (0: moved, or never asked)."""
    stalled_at: float = 0.0
    """When the connection was last dropped as stalled (silent while the market moved)."""


class BinanceKlineFeed(SettlingFeed):
    """Closed and in-progress klines for many streams over combined-stream connections."""

    def __init__(
        self,
        bus: EventBus,
        streams: Iterable[StreamKey],
        settings: BinanceFeedSettings | None = None,
        name: str = "binance",
    ) -> None:
        super().__init__(bus, streams, name)
        self.settings = settings or BinanceFeedSettings()
        self._codec = KlineCodec()
        self.forming = FormingBars(self._codec, self.sequencers)
        """Each stream's bar still forming, converted only when asked for."""
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._client: AsyncClient | None = None
        self._symbols_checked = False
        self._check_lock = asyncio.Lock()
        self._settle_lock = asyncio.Lock()
        self.clock = ExchangeClock()
        self.fatal_stream: StreamKey | None = None
        """The stream whose recorded history contradicts the exchange, if that is fatal."""
        self.connections: list[_Connection] = []
        """The planned connections (set by :meth:`run`), read by the metrics exporter."""
        self.states: dict[StreamKey, StreamState] = {
            key: StreamState(key, interval_ms(key[1]), sequencer)
            for key, sequencer in self.sequencers.items()
        }
        self.connect_budget: ConnectionBudget = connection_budget(
            self.settings.ws_url, self.settings.connect_limits
        )
        self.venue = self.settings.venue
        self.rest_budget: RestBudget = rest_budget(
            self.settings.rest_url, self.settings.rest_limits or RestLimits()
        )

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
        client = AsyncClient()
        client.API_URL = self.settings.rest_url.rstrip("/")
        self._client = client
        connections = self.connections = self.plan_connections()
        tasks = [
            asyncio.create_task(
                self.supervise(
                    partial(self._session, conn), self.settings.reconnect, self._stopping
                ),
                name=f"{self.name}:conn{n}",
            )
            for n, conn in enumerate(connections)
        ]
        tasks.append(asyncio.create_task(self._settle_loop(), name=f"{self.name}:settler"))
        try:
            await self._stopping.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await client.close_connection()
            self.report(FeedState.STOPPED, self.stats.summary())
            if len(self.sequencers) > 1:
                log.info("%s: bars per stream: %s", self.name, self.stream_summary())

    def plan_connections(self) -> list[_Connection]:
        """Split the streams so each connection stays under Binance's stream and URL limits."""
        settings = self.settings
        most = max(1, min(settings.streams_per_connection, self.venue.max_streams))
        base = len(settings.ws_url) + len("stream?streams=")
        groups: list[list[StreamState]] = [[]]
        length = base
        for state in self.states.values():
            extra = len(stream_name(*state.key)) + (1 if groups[-1] else 0)
            if groups[-1] and (len(groups[-1]) >= most or length + extra > settings.max_url_chars):
                groups.append([])
                length, extra = base, extra - 1
            groups[-1].append(state)
            length += extra
        connections = []
        for group in groups:
            names = [stream_name(*s.key) for s in group]
            label = ",".join(names) if len(names) <= 4 else f"{len(names)} streams"
            connections.append(_Connection(group, names, label))
        return connections

    # -- connections ---------------------------------------------------------------------

    async def _session(self, conn: _Connection) -> bool:
        """One connection of ``conn``, from connect to its end; True if it stayed up
        ``healthy_after`` seconds (the backoff starts over)."""
        loop = asyncio.get_running_loop()
        up_since = loop.time()
        conn.state = FeedState.CONNECTING
        try:
            await self._mark_live_floor(conn)
            conn.link = await self._connect(conn, pump=False)
            await self._check_symbols()
            await self._settle([s for s in self._due() if not s.caught_up], conn.streams)
            if self.fatal is not None:
                self.report(FeedState.ERROR, self.fatal, logging.ERROR)
                self.stop()
                return False
            self._start_pump(conn.link, conn)
            self.report(FeedState.LIVE, conn.label)
            conn.state = FeedState.LIVE
            self._wake.set()
            await self._watch(conn)
        except UnknownSymbolError as exc:
            self.fatal = str(exc)
            self.report(FeedState.ERROR, self.fatal, logging.ERROR)
            self.stop()
        except StreamLost as exc:
            conn.state = exc.state
            if exc.state is FeedState.STALLED:
                conn.stalls += 1
                conn.stalled_at = loop.time()
            self.report(exc.state, str(exc), logging.WARNING)
        except BackfillError as exc:
            self.stats.errors += 1
            self.report(FeedState.ERROR, str(exc), logging.WARNING)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            self.stats.errors += 1
            target = self.settings.ws_url
            self.report(
                FeedState.ERROR, f"cannot connect to {target}: {describe(exc)}", logging.WARNING
            )
        except Exception as exc:
            self.stats.errors += 1
            self._refused(exc)
            self.report(FeedState.ERROR, describe(exc), logging.ERROR, exc)
        finally:
            healthy = False
            if conn.link is not None:
                healthy = loop.time() - up_since >= self.settings.healthy_after
                await _close_link(conn.link)
                conn.link = None
            if conn.state in (FeedState.CONNECTING, FeedState.LIVE):
                conn.state = FeedState.ERROR
            if self._stopping.is_set():
                conn.state = FeedState.STOPPED
            else:
                conn.reconnects += 1
        return healthy

    async def _mark_live_floor(self, conn: _Connection) -> None:
        """Before a capped first catch-up, note the earliest bar each stream's new socket may
        deliver (from the exchange's clock, read before connecting): the cap never skips it."""
        first = [s for s in conn.streams if not s.caught_up and not s.halted]
        if self.settings.backfill_limit is None or not first:
            return
        await self._check_symbols()
        server_now = await self._server_time()
        for state in first:
            state.live_from_ms = bar_open_ms(server_now, state.key[1]) - state.step_ms

    async def _connect(self, conn: _Connection, pump: bool = True) -> _Link:
        """Open one socket for ``conn`` within the attempt budget (frames queue in the
        socket until the pump starts)."""
        await self.connect_budget.acquire()
        self.report(FeedState.CONNECTING, f"{self.settings.ws_url} {conn.label}")
        link = _Link(await self._open(conn.names))
        link.opened = asyncio.get_running_loop().time()
        self.report(FeedState.CONNECTED, conn.label)
        if pump:
            self._start_pump(link, conn)
        return link

    def _start_pump(self, link: _Link, conn: _Connection) -> None:
        conn.last_frame = asyncio.get_running_loop().time()
        link.pump = asyncio.create_task(self._pump(link, conn), name=f"{self.name}:pump")

    def _refused(self, exc: BaseException) -> None:
        """A handshake answered 429/418: every connection waits out its Retry-After."""
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status in (418, 429):
            headers = getattr(response, "headers", {})
            wait = _seconds(headers.get("Retry-After")) or 60.0
            self.connect_budget.ban(wait)
            log.warning("%s: handshake refused (HTTP %s): waiting %.0fs", self.name, status, wait)

    async def _open(self, names: Sequence[str]) -> StreamSocket:
        """Connect one combined-stream socket with the configured transport."""
        assert self._client is not None
        settings = self.settings
        return await open_socket(
            settings.transport, self._client, settings.ws_url, names, settings.max_queue_size
        )

    async def _watch(self, conn: _Connection) -> None:
        """Supervise the live link until it is lost; a planned close hands over instead."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        timeout = settings.stall_timeout
        next_probe = 0.0
        quiet_probes = 0
        while True:
            link = conn.link
            assert link is not None and link.pump is not None
            done, _ = await asyncio.wait({link.pump}, timeout=max(0.05, min(timeout / 4, 1.0)))
            if done:
                link.pump.result()
                raise StreamLost("stream ended")
            now = loop.time()
            if conn.handover is not None or now - link.opened >= settings.max_connection_age:
                reason = conn.handover or "connection lifetime"
                conn.handover = None
                conn.link = await self._hand_over(link, conn, reason)
                continue
            silent = now - conn.last_frame
            if silent <= timeout:
                quiet_probes = 0
            elif now >= next_probe:
                moved = await self._market_moved(conn)
                conn.quiet_at = 0.0 if moved else loop.time()
                if moved:
                    raise StreamLost(
                        f"no frame for {silent:.1f}s while the market moved", FeedState.STALLED
                    )
                # A quiet market: ask again, less often the longer it stays quiet.
                quiet_probes += 1
                next_probe = loop.time() + min(timeout * 2**quiet_probes, max(timeout, 60.0))

    async def _hand_over(self, old: _Link, conn: _Connection, reason: str) -> _Link:
        """Make before break: the new socket is subscribed before the old one closes, so a
        planned close loses nothing and needs no REST call."""
        self.report(FeedState.CONNECTING, f"handover ({reason}): {conn.label}")
        new = await self._connect(conn)
        try:
            overlap = min(1.0, self.settings.stall_timeout)
            deadline = asyncio.get_running_loop().time() + overlap
            while new.frames == 0 and asyncio.get_running_loop().time() < deadline:
                assert new.pump is not None
                if new.pump.done():
                    break
                await asyncio.sleep(0.01)
        except BaseException:
            await _close_link(new)
            raise
        await _close_link(old)
        self.stats.handovers += 1
        self.report(FeedState.LIVE, f"handed over ({reason}): {conn.label}")
        return new

    async def _pump(self, link: _Link, conn: _Connection) -> None:
        """Every frame of the link through the codec to :meth:`_on_bar`, until it ends.

        Nine frames in ten are in-progress updates; when nobody subscribes to
        ``bar.partial`` such a frame is decoded into one struct, the stream's state is
        kept right here (what :meth:`_on_bar` keeps, without floats or a BarEvent; its
        prices reach nothing until :attr:`forming` converts them on request) and that is
        all: the hot path of a recorder, bound once per connection.
        """
        loop = asyncio.get_running_loop()
        # asyncio's loop.time() is time.monotonic() behind a Python call: skip the call.
        now_of = time.monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        stats, states, clock, wake = self.stats, self.states, self.clock, self._wake
        codec = self._codec
        parse, read, convert = codec.parse, codec.read, codec.convert
        times, time_of = codec.times, codec.time
        on_bar, latest = self._on_bar, self.forming.latest
        heard = partial(self.bus.has_subscribers, BAR_PARTIAL)

        def on_frame(message: Any) -> None:
            now = conn.last_frame = conn.last_data = now_of()
            link.frames += 1
            stats.frames += 1
            try:
                if type(message) is not bytes and type(message) is not str:
                    on_bar(parse(message, time.time_ns()), now)
                    return
                k, event_ms = read(message)
                if k.x or heard():
                    on_bar(convert(k, event_ms, time.time_ns()), now)
                    return
            except KlineParseError as exc:
                self._not_a_kline(message, exc, conn)
                return
            # An in-progress update nobody subscribes to (its prices are not even checked).
            key = (k.s, k.i)
            state = states.get(key)
            if state is None:
                stats.stale += 1
                return
            open_time = times.get(k.t) or time_of(k.t)
            seen = state.seen_open
            sequencer = state.sequencer
            if seen is None or open_time > seen:
                state.seen_open = open_time
                clock.observe(event_ms, now)
                due = sequencer.next_open()
                if due is not None and open_time > due:
                    wake.set()  # the x:true of an earlier bar never came: settle it
            if k.n > state.seen_trades or open_time != seen:
                state.seen_trades = k.n
            limit = self.bar_limit
            if limit is not None and stats.bars >= limit:
                stats.stale += 1
                return
            last = sequencer.last
            if last is None:
                sequencer.anchor(open_time)
            elif open_time <= last:
                stats.stale += 1
                return
            latest[key] = (k, event_ms)
            stats.partials += 1

        try:
            await link.socket.run(on_frame)
        except SocketClosed as exc:
            raise StreamLost(str(exc)) from None

    def _not_a_kline(self, message: Any, exc: KlineParseError, conn: _Connection) -> None:
        """Error payloads end the connection, ``serverShutdown`` starts a handover, and
        anything else is a malformed frame, counted and skipped."""
        if _is_server_shutdown(message):
            if conn.handover is None:
                conn.handover = "serverShutdown"
                log.info("%s: serverShutdown: handing over to a new connection", self.name)
            return
        error = _error_payload(message)
        if error is not None:
            raise StreamLost(error) from None
        self.stats.malformed += 1
        self.report(FeedState.MALFORMED, f"frame skipped: {exc}", logging.WARNING)

    def _on_bar(self, bar: BarEvent, now: float) -> None:
        """Route one live update: partials out, closed bars in order or held for the settler."""
        state = self.states.get((bar.symbol, bar.interval))
        if state is None:
            self.offer(bar)
            return
        open_time = bar.open_time
        seen = state.seen_open
        if seen is None or open_time > seen:
            state.seen_open = open_time
            self.clock.observe(epoch_ms(bar.event_time), now)
            due = state.sequencer.next_open()
            if not bar.closed and due is not None and open_time > due:
                self._wake.set()  # the x:true of an earlier bar never came: settle it
        if bar.trades > state.seen_trades or open_time != seen:
            state.seen_trades = bar.trades
        if not bar.closed:
            if self.bar_limit is not None and self.limit_reached:
                self.stats.stale += 1
            else:  # most frames: straight to the partial rule, no second stream lookup
                self.forming.latest[state.key] = bar
                self.offer_partial(state.sequencer, bar)
            return
        self._on_closed(state, bar)

    async def _market_moved(self, conn: _Connection) -> bool:
        """Ask REST whether any of the connection's liveliest streams traded since the
        stream last showed it; a silent stream of a quiet market is not a dead one."""
        self.stats.probes += 1
        live = [s for s in conn.streams if not s.halted]
        live.sort(key=lambda s: s.seen_open or from_epoch_ms(0), reverse=True)
        moved = False
        for state in live[: self.settings.probe_streams]:
            symbol, interval = state.key
            try:
                rows = await self.rest_klines(symbol, interval, None, None, 1)
            except BackfillError as exc:
                log.info("%s: liveness probe failed: %s", self.name, exc)
                return False
            if not rows:
                continue
            open_time, trades = from_epoch_ms(rows[-1][0]), int(rows[-1][8])
            seen = state.seen_open
            if seen is not None and (
                (open_time > seen and trades > 0)
                or (open_time == seen and trades > state.seen_trades)
            ):
                moved = True
            elif seen is None or open_time >= seen:
                state.seen_open, state.seen_trades = open_time, trades
        return moved

    async def _check_symbols(self) -> None:
        """Once per run, ask the exchange about the configured symbols only.

        Binance silently sends nothing for an unknown stream, so without this a typo
        in a symbol would look like a healthy, quiet feed. Symbols that are not
        TRADING are warned about and left out of liveness probes and settling.
        """
        async with self._check_lock:
            if self._symbols_checked:
                return
            client = self._client
            assert client is not None
            configured = sorted({symbol for symbol, _ in self.sequencers})
            params = {}
            if self.venue.exchange_info_by_symbols and len(configured) <= EXCHANGE_INFO_SYMBOLS:
                params = {"symbols": orjson.dumps(configured).decode()}
            source = self.venue.endpoint(self.settings.rest_url, "exchangeInfo")
            try:
                info = await self._exchange_info(params)
            except BackfillError as exc:
                if "-1121" not in str(exc):
                    raise
                info = await self._exchange_info({})  # -1121 names no symbol: see which
            status = self.venue.status_field
            listed = {entry["symbol"]: entry.get(status) for entry in info.get("symbols", [])}
            unknown = [symbol for symbol in configured if symbol not in listed]
            if unknown:
                raise UnknownSymbolError(
                    f"unknown symbol {', '.join(unknown)}: not listed by {source}"
                )
            for symbol in configured:
                if listed[symbol] != "TRADING":
                    status = listed[symbol]
                    log.warning("%s: %s is %s, not TRADING: no bars", self.name, symbol, status)
                    for state in self.states.values():
                        state.halted |= state.key[0] == symbol
            self._symbols_checked = True

    async def _exchange_info(self, params: dict[str, str]) -> Any:
        weight = self.venue.exchange_info_weight
        return await self._rest("exchangeInfo", weight, partial(self._get, "exchangeInfo", params))

    # -- REST ----------------------------------------------------------------------------

    async def rest_klines(
        self, symbol: str, interval: str, start_ms: int | None, end_ms: int | None, limit: int
    ) -> list[list[Any]]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": limit}
        if start_ms is not None:
            params["startTime"] = start_ms
        if end_ms is not None:
            params["endTime"] = end_ms
        weight = self.venue.klines_weight(limit)
        rows: list[list[Any]] = await self._rest(
            f"{symbol} {interval} klines", weight, partial(self._get, "klines", params)
        )
        return rows

    async def _server_time(self) -> int:
        """The exchange's clock in epoch ms: authoritative for which bars have settled."""
        weight = self.venue.time_weight
        answer = await self._rest("server time", weight, partial(self._get, "time", {}))
        server_ms = int(answer["serverTime"])
        self.clock.observe(server_ms)
        return server_ms

    async def _get(self, endpoint: str, params: dict[str, Any]) -> Any:
        """GET one of the venue's public endpoints through python-binance's session (its
        error handling, its ``response`` for the weight header), whatever the venue."""
        client = self._client
        assert client is not None
        uri = self.venue.endpoint(self.settings.rest_url, endpoint)
        if not params:  # as python-binance's own calls: no body, no form
            return await client._request("get", uri, False)
        return await client._request("get", uri, False, data=params)

    async def _rest(self, what: str, weight: int, call: Callable[[], Awaitable[Any]]) -> Any:
        """One REST request inside the process-wide weight budget.

        A 429/418 bans every caller for Retry-After (no request is sent inside the
        window) and this call fails, to be retried by its caller's own schedule; any
        other failure is a BackfillError naming ``what``.
        """
        budget = self.rest_budget
        await budget.acquire(weight)
        self.stats.rest_calls += 1
        try:
            answer = await call()
        except BinanceAPIException as exc:
            self._read_weight(getattr(exc, "response", None))
            if exc.status_code in (418, 429):
                wait = _retry_after(exc) or 60.0
                budget.ban(wait)
                self.stats.rate_limited += 1
                log.warning(
                    "%s: %s: HTTP %d, nothing is sent for %.0fs (Retry-After)",
                    self.name, what, exc.status_code, wait,
                )  # fmt: skip
            raise BackfillError(f"{what}: HTTP {exc.status_code} {exc.code} {exc.message}") from exc
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise BackfillError(f"{what}: {describe(exc)}") from exc
        self._read_weight(getattr(self._client, "response", None))
        return answer

    def _read_weight(self, response: Any) -> None:
        headers = getattr(response, "headers", None)
        if headers is None:
            return
        used = headers.get("X-MBX-USED-WEIGHT-1M") or headers.get("x-mbx-used-weight-1m")
        if used is not None and used.isdigit():
            self.rest_budget.report_used(int(used))


def _seconds(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _retry_after(exc: BinanceAPIException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    return _seconds(headers.get("Retry-After")) if headers is not None else None


def _is_server_shutdown(message: Any) -> bool:
    """Binance's notice that this server is about to restart (combined or raw form)."""
    if isinstance(message, bytes):
        message = message.decode(errors="replace")
    return isinstance(message, str) and '"serverShutdown"' in message


def _error_payload(message: Any) -> str | None:
    """What an error message says, if ``message`` is one (from Binance or python-binance)."""
    if isinstance(message, str | bytes):
        text = message if isinstance(message, str) else message.decode(errors="replace")
        if "error" not in text:
            return None
        try:
            message = orjson.loads(message)
        except orjson.JSONDecodeError:
            return None
    if isinstance(message, dict) and is_error_payload(message):
        error = message.get("error")
        if isinstance(error, dict):
            return f"exchange error {error.get('code')}: {error.get('msg')}"
        return f"{message.get('type', 'error')}: {message.get('m', message)}"
    return None


async def _close_link(link: _Link) -> None:
    """Stop the link's pump for sure, then tear its socket down (the socket is detached
    first: python-binance's ``recv`` can swallow a cancellation, see
    :meth:`LibrarySocket.run`)."""
    link.socket.detach()
    pump = link.pump
    while pump is not None and not pump.done():
        pump.cancel()
        await asyncio.wait({pump}, timeout=0.1)
    if pump is not None and not pump.cancelled() and pump.exception() is not None:
        log.debug("pump ended with %s", describe(pump.exception()))  # type: ignore[arg-type]
    await link.socket.close()
