"""The connection supervisor: per group of streams (split by Binance's stream limit and by
URL length: over about 8,000 characters is refused, a third-party measurement), connect
within the attempt budget, settle, pump, judge silence, hand over before a planned close
(make before break), and back off after failures (``DataFeed.supervise``).
"""

from __future__ import annotations

import asyncio
import logging
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from quantcore.backoff import describe
from quantcore.events import FeedState
from quantcore.feeds.binance.codec import KlineParseError, is_error_payload, stream_name
from quantcore.feeds.binance.limits import ConnectionBudget
from quantcore.feeds.binance.liveness import market_moved
from quantcore.feeds.binance.rest import BackfillError, retry_after
from quantcore.feeds.binance.settler import SettlingFeed, StreamState
from quantcore.feeds.binance.stream_socket import StreamSocket
from quantcore.feeds.binance.symbols import UnknownSymbolError
from quantcore.feeds.binance.transport import open_socket
from quantcore.intervals import bar_open_ms

log = logging.getLogger(__name__)


class StreamLost(RuntimeError):
    """The live connection ended (error payload, closed socket or stall); ``state`` says
    which, for the one status report the supervisor makes of it."""

    def __init__(self, detail: str, state: FeedState = FeedState.DISCONNECTED) -> None:
        super().__init__(detail)
        self.state = state


@dataclass(slots=True, eq=False)
class Link:
    """One open socket and the task pumping it."""

    socket: StreamSocket
    pump: asyncio.Task[None] | None = None
    frames: int = 0
    opened: float = 0.0


@dataclass(slots=True, eq=False)
class Connection:
    """One planned connection: its streams, its link now, and what metrics report of it."""

    streams: list[StreamState]
    names: list[str]
    label: str
    last_frame: float = 0.0
    handover: str | None = None
    """Why the exchange asked us to move (``serverShutdown``), until the handover."""
    link: Link | None = None
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


class ConnectionSupervisor(SettlingFeed):
    """The connections of the Binance feed; the feed pumps each link's frames."""

    connections: list[Connection]
    connect_budget: ConnectionBudget

    @abstractmethod
    async def _pump(self, link: Link, conn: Connection) -> None:
        """Every frame of ``link`` to the feed until it ends (StreamLost when it does)."""

    def plan_connections(self) -> list[Connection]:
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
            connections.append(Connection(group, names, label))
        return connections

    async def _session(self, conn: Connection) -> bool:
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
                await close_link(conn.link)
                conn.link = None
            if conn.state in (FeedState.CONNECTING, FeedState.LIVE):
                conn.state = FeedState.ERROR
            if self._stopping.is_set():
                conn.state = FeedState.STOPPED
            else:
                conn.reconnects += 1
        return healthy

    async def _mark_live_floor(self, conn: Connection) -> None:
        """Before a capped first catch-up, note the earliest bar each stream's new socket may
        deliver (from the exchange's clock, read before connecting): the cap never skips it."""
        first = [s for s in conn.streams if not s.caught_up and not s.halted]
        if self.settings.backfill_limit is None or not first:
            return
        await self._check_symbols()
        server_now = await self.server_time()
        for state in first:
            state.live_from_ms = bar_open_ms(server_now, state.key[1]) - state.step_ms

    async def _connect(self, conn: Connection, pump: bool = True) -> Link:
        """Open one socket for ``conn`` within the attempt budget (frames queue in the
        socket until the pump starts)."""
        await self.connect_budget.acquire()
        self.report(FeedState.CONNECTING, f"{self.settings.ws_url} {conn.label}")
        s = self.settings
        socket = await open_socket(s.transport, s.ws_url, conn.names, s.max_queue_size)
        link = Link(socket, opened=asyncio.get_running_loop().time())
        self.report(FeedState.CONNECTED, conn.label)
        if pump:
            self._start_pump(link, conn)
        return link

    def _start_pump(self, link: Link, conn: Connection) -> None:
        conn.last_frame = asyncio.get_running_loop().time()
        link.pump = asyncio.create_task(self._pump(link, conn), name=f"{self.name}:pump")

    def _refused(self, exc: BaseException) -> None:
        """A handshake answered 429/418: every connection waits out its Retry-After."""
        response = getattr(exc, "response", None)
        status = getattr(response, "status_code", None)
        if status in (418, 429):
            wait = retry_after(getattr(response, "headers", {}))
            self.connect_budget.ban(wait)
            log.warning("%s: handshake refused (HTTP %s): waiting %.0fs", self.name, status, wait)

    async def _watch(self, conn: Connection) -> None:
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
                self.stats.probes += 1
                moved = await market_moved(self.rest, conn.streams, settings.probe_streams)
                conn.quiet_at = 0.0 if moved else loop.time()
                if moved:
                    raise StreamLost(
                        f"no frame for {silent:.1f}s while the market moved", FeedState.STALLED
                    )
                # A quiet market: ask again, less often the longer it stays quiet.
                quiet_probes += 1
                next_probe = loop.time() + min(timeout * 2**quiet_probes, max(timeout, 60.0))

    async def _hand_over(self, old: Link, conn: Connection, reason: str) -> Link:
        """Make before break: the new socket is subscribed before the old one closes, so a
        planned close loses nothing and needs no REST call. Until it returns, the caller
        owns only ``old``: a stop (or error) on the way closes ``new`` here, also while
        ``old`` is closing, so no pump outlives the feed."""
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
            await close_link(old)
        except BaseException:
            await close_link(new)
            raise
        self.stats.handovers += 1
        self.report(FeedState.LIVE, f"handed over ({reason}): {conn.label}")
        return new

    async def _check_symbols(self) -> None:
        """The symbol check, once per run; symbols not TRADING are left out of liveness
        probes and settling."""
        halted = await self.symbol_check.run()
        for state in self.states.values():
            state.halted |= state.key[0] in halted

    def _not_a_kline(self, message: Any, exc: KlineParseError, conn: Connection) -> None:
        """Error payloads end the connection, ``serverShutdown`` starts a handover, and
        anything else is a malformed frame, counted and skipped."""
        text = message.decode(errors="replace") if isinstance(message, bytes) else message
        if isinstance(text, str) and '"serverShutdown"' in text:  # this server restarts soon
            if conn.handover is None:
                conn.handover = "serverShutdown"
                log.info("%s: serverShutdown: handing over to a new connection", self.name)
            return
        error = _error_payload(message)
        if error is not None:
            raise StreamLost(error) from None
        self.stats.malformed += 1
        self.report(FeedState.MALFORMED, f"frame skipped: {exc}", logging.WARNING)


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


async def close_link(link: Link) -> None:
    """Stop the link's pump for sure, then tear its socket down (detached first: python-
    binance's ``recv`` can swallow a cancellation, see :meth:`LibrarySocket.run`)."""
    link.socket.detach()
    pump = link.pump
    while pump is not None and not pump.done():
        pump.cancel()
        await asyncio.wait({pump}, timeout=0.1)
    if pump is not None and not pump.cancelled() and pump.exception() is not None:
        log.debug("pump ended with %s", describe(pump.exception()))  # type: ignore[arg-type]
    await link.socket.close()
