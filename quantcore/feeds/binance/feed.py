"""BinanceKlineFeed: kline WebSocket streams through python-binance, supervised.

python-binance's socket gives up after a few reconnects, never notices a silent
server, and can lose queued frames when its read loop dies. So the library's own
reconnecting is switched off and one supervisor per connection owns the whole
lifecycle: connect, backfill what was missed over REST, pump frames, detect stalls,
tear down, back off, repeat. Correctness comes from the sequencer plus backfill, not
from any single connection staying up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import orjson
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException, ReadLoopClosed
from binance.ws.constants import WSListenerState

from quantcore.backoff import Backoff, describe
from quantcore.bus import EventBus
from quantcore.events import FeedState, epoch_ms, from_epoch_ms
from quantcore.feeds.base import DataFeed, StreamKey
from quantcore.feeds.binance.codec import KlineCodec, KlineParseError, is_error_payload, stream_name
from quantcore.intervals import interval_ms

log = logging.getLogger(__name__)

REST_PAGE = 1000
"""Binance's maximum ``limit`` for /api/v3/klines."""
MAX_STREAMS_PER_CONNECTION = 1024
"""Binance rejects combined-stream connections with more streams than this."""


class BackfillError(RuntimeError):
    """REST backfill failed; the connection cycle restarts so no gap is skipped."""


class UnknownSymbolError(RuntimeError):
    """The exchange does not list a configured symbol; retrying cannot help."""


class StreamLost(RuntimeError):
    """The live connection ended (error payload, closed socket or stall); ``state`` says
    which, for the one status report the supervisor makes of it."""

    def __init__(self, detail: str, state: FeedState = FeedState.DISCONNECTED) -> None:
        super().__init__(detail)
        self.state = state


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How long to wait between connection attempts; forever unless max_attempts is set."""

    backoff: Backoff = field(default_factory=Backoff)
    max_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class BinanceFeedSettings:
    """Everything that differs between Binance and the local exchange is a URL here."""

    ws_url: str = "wss://stream.binance.com:9443/"
    rest_url: str = "https://api.binance.com/api"
    max_queue_size: int = 100_000
    stall_timeout: float = 10.0
    backfill_limit: int = 1000
    warmup_bars: int = 0
    streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    rest_retries: int = 5


@dataclass(slots=True)
class _Connection:
    streams: list[StreamKey]
    last_frame: float = 0.0
    closing: bool = False
    resumed: bool = False
    """Set after the first successful backfill: only that one is bounded by backfill_limit."""


class BinanceKlineFeed(DataFeed):
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
        self._stopping = asyncio.Event()
        self._client: AsyncClient | None = None
        self._symbols_checked = False
        self._check_lock = asyncio.Lock()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        client = AsyncClient()
        client.API_URL = self.settings.rest_url.rstrip("/")
        self._client = client
        keys = self.streams
        size = max(1, min(self.settings.streams_per_connection, MAX_STREAMS_PER_CONNECTION))
        connections = [_Connection(keys[i : i + size]) for i in range(0, len(keys), size)]
        supervisors = [
            asyncio.create_task(self._supervise(conn), name=f"{self.name}:conn{n}")
            for n, conn in enumerate(connections)
        ]
        try:
            await self._stopping.wait()
        finally:
            for task in supervisors:
                task.cancel()
            await asyncio.gather(*supervisors, return_exceptions=True)
            await client.close_connection()
            self.report(FeedState.STOPPED, self.stats.summary())
            if len(self.sequencers) > 1:
                log.info("%s: bars per stream: %s", self.name, self.stream_summary())

    async def _supervise(self, conn: _Connection) -> None:
        names = [stream_name(symbol, interval) for symbol, interval in conn.streams]
        label = ",".join(names) if len(names) <= 4 else f"{len(names)} streams"
        attempt = 0
        while not self._stopping.is_set():
            socket: Any = None
            try:
                self.report(FeedState.CONNECTING, f"{self.settings.ws_url} {label}")
                socket = await self._open(names)
                self.report(FeedState.CONNECTED, label)
                await self._check_symbols()
                await self._backfill(conn)
                conn.last_frame = asyncio.get_running_loop().time()
                self.report(FeedState.LIVE, label)
                attempt = 0
                await self._watch(socket, conn)
            except UnknownSymbolError as exc:
                self.fatal = str(exc)
                self.report(FeedState.ERROR, self.fatal, logging.ERROR)
                self.stop()
                return
            except StreamLost as exc:
                self.report(exc.state, str(exc), logging.WARNING)
            except BackfillError as exc:
                self.stats.errors += 1
                self.report(FeedState.ERROR, f"backfill failed: {exc}", logging.WARNING)
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                self.stats.errors += 1
                target = self.settings.ws_url
                self.report(
                    FeedState.ERROR,
                    f"cannot connect to {target}: {describe(exc)}",
                    logging.WARNING,
                )
            except Exception as exc:
                self.stats.errors += 1
                self.report(FeedState.ERROR, describe(exc), logging.ERROR)
            finally:
                if socket is not None:
                    await _close_socket(socket)
            if self._stopping.is_set():
                return
            policy = self.settings.reconnect
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                self.report(FeedState.STOPPED, f"giving up after {attempt} attempts", logging.ERROR)
                self.stop()
                return
            delay = policy.backoff.delay(attempt)
            attempt += 1
            self.stats.reconnects += 1
            log.info("%s: reconnecting in %.1fs (attempt %d)", self.name, delay, attempt)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _open(self, names: Sequence[str]) -> Any:
        """Connect one combined-stream socket with the library's own reconnects disabled."""
        assert self._client is not None
        manager = BinanceSocketManager(self._client, max_queue_size=self.settings.max_queue_size)
        manager.STREAM_URL = self.settings.ws_url
        socket = manager.multiplex_socket(list(names))
        socket.MAX_RECONNECTS = 0
        socket.TIMEOUT = 1.0
        # Keep frames as text: the codec decodes and validates them in one C pass, and
        # the library's per-message debug f-string then copies a string, not a dict repr.
        socket.json_loads = _keep_text
        try:
            await socket.__aenter__()
        except BaseException:
            await _close_socket(socket)
            raise
        return socket

    async def _watch(self, socket: Any, conn: _Connection) -> None:
        """Pump frames until the stream ends; a stall (no frame for a while) ends it too."""
        loop = asyncio.get_running_loop()
        pump = asyncio.create_task(self._pump(socket, conn), name=f"{self.name}:pump")
        timeout = self.settings.stall_timeout
        try:
            while True:
                done, _ = await asyncio.wait({pump}, timeout=max(0.05, timeout / 4))
                if done:
                    pump.result()
                    return
                silent = loop.time() - conn.last_frame
                if silent > timeout:
                    raise StreamLost(f"no frame for {silent:.1f}s", FeedState.STALLED)
        finally:
            await _stop_pump(pump, conn)

    async def _pump(self, socket: Any, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        stats = self.stats
        parse = self._codec.parse
        offer = self.offer
        conn.closing = False
        while not conn.closing:
            try:
                message = await socket.recv()
            except ReadLoopClosed as exc:
                raise StreamLost("read loop closed") from exc
            conn.last_frame = loop.time()
            stats.frames += 1
            try:
                bar = parse(message, time.time_ns())
            except KlineParseError as exc:
                error = _error_payload(message)
                if error is not None:
                    raise StreamLost(error) from None
                stats.malformed += 1
                self.report(FeedState.MALFORMED, f"frame skipped: {exc}", logging.WARNING)
                continue
            missing = offer(bar)
            if missing is not None:
                await self._fill(bar.symbol, bar.interval, missing, bar.open_time)
                conn.last_frame = loop.time()
                self.publish_closed(bar, backfilled=False)

    async def _check_symbols(self) -> None:
        """Once per run, ask the exchange whether every configured symbol exists.

        Binance silently sends nothing for an unknown stream, so without this a typo
        in a symbol would look like a healthy, quiet feed.
        """
        async with self._check_lock:
            if self._symbols_checked:
                return
            assert self._client is not None
            info = await self._rest("exchangeInfo", self._client.get_exchange_info)
            listed = {entry["symbol"]: entry.get("status") for entry in info.get("symbols", [])}
            configured = sorted({symbol for symbol, _ in self.sequencers})
            unknown = [symbol for symbol in configured if symbol not in listed]
            if unknown:
                source = f"{self.settings.rest_url.rstrip('/')}/v3/exchangeInfo"
                raise UnknownSymbolError(
                    f"unknown symbol {', '.join(unknown)}: not listed by {source}"
                )
            for symbol in configured:
                if listed[symbol] != "TRADING":
                    log.warning(
                        "%s: %s is %s, not TRADING: expect no bars",
                        self.name,
                        symbol,
                        listed[symbol],
                    )
            self._symbols_checked = True

    async def _backfill(self, conn: _Connection) -> None:
        """After (re)connecting: fetch over REST every closed bar missed since the last."""
        assert self._client is not None
        warmup = self.settings.warmup_bars
        pending = [key for key in conn.streams if self.sequencers[key].last is not None or warmup]
        if not pending:
            conn.resumed = True
            return
        server_now = await self._server_time()
        for symbol, interval in pending:
            sequencer = self.sequencers[(symbol, interval)]
            step = sequencer.step
            start = sequencer.next_open()
            if start is None:
                start = _floor(server_now, step) - warmup * step
            oldest = _floor(server_now, step) - self.settings.backfill_limit * step
            if start < oldest and not conn.resumed:
                log.warning(
                    "%s: %s %s: %d bars since %s exceed backfill_limit=%d; starting at %s",
                    self.name,
                    symbol,
                    interval,
                    (server_now - start) // step,
                    start,
                    self.settings.backfill_limit,
                    oldest,
                )
                start = oldest
                sequencer.last = oldest - step
            await self._fetch_closed(symbol, interval, start, server_now)
        conn.resumed = True

    async def _fill(self, symbol: str, interval: str, start: datetime, before: datetime) -> None:
        """Fill a hole seen in the live stream: closed bars in [start, before)."""
        log.info("%s: %s %s: gap %s..%s, backfilling", self.name, symbol, interval, start, before)
        await self._fetch_closed(symbol, interval, start, before)

    async def _fetch_closed(
        self, symbol: str, interval: str, start: datetime, before: datetime
    ) -> None:
        """Publish bars with open time >= start whose close time is before ``before``.

        ``before`` is either server time (so the still-forming bar is left out) or the
        open time of a live bar that arrived after a hole. Pages 1000 rows at a time.
        """
        step_ms = interval_ms(interval)
        start_ms, before_ms = epoch_ms(start), epoch_ms(before)
        while start_ms < before_ms:
            rows = await self._rest_klines(symbol, interval, start_ms, before_ms - 1)
            received = time.time_ns()
            for row in rows:
                try:
                    bar = self._codec.parse_rest_row(symbol, interval, row, received)
                except KlineParseError as exc:
                    self.stats.malformed += 1
                    raise BackfillError(f"{symbol} {interval}: bad REST row: {exc}") from exc
                if row[6] < before_ms:
                    self.publish_closed(bar, backfilled=True)
            if len(rows) < REST_PAGE:
                return
            start_ms = rows[-1][0] + step_ms

    async def _rest_klines(
        self, symbol: str, interval: str, start_ms: int, end_ms: int
    ) -> list[list[Any]]:
        client = self._client
        assert client is not None
        rows: list[list[Any]] = await self._rest(
            f"{symbol} {interval} klines",
            lambda: client.get_klines(
                symbol=symbol,
                interval=interval,
                startTime=start_ms,
                endTime=end_ms,
                limit=REST_PAGE,
            ),
        )
        return rows

    async def _server_time(self) -> datetime:
        """The exchange's clock: authoritative for which bars have closed."""
        assert self._client is not None
        answer = await self._rest("server time", self._client.get_server_time)
        return from_epoch_ms(answer["serverTime"])

    async def _rest(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """One REST request, retried with backoff on HTTP 429/418 (Binance's rate limits,
        honouring Retry-After); any other failure is a BackfillError naming ``what``."""
        retries = self.settings.rest_retries
        for attempt in range(retries + 1):
            try:
                return await call()
            except BinanceAPIException as exc:
                if exc.status_code in (418, 429) and attempt < retries:
                    wait = _retry_after(exc) or self.settings.reconnect.backoff.delay(attempt + 1)
                    log.warning(
                        "%s: %s: HTTP %d, waiting %.1fs", self.name, what, exc.status_code, wait
                    )
                    await asyncio.sleep(wait)
                    continue
                raise BackfillError(f"{what}: HTTP {exc.status_code} {exc.message}") from exc
            except (TimeoutError, OSError, aiohttp.ClientError) as exc:
                raise BackfillError(f"{what}: {describe(exc)}") from exc
        raise BackfillError(f"{what}: still rate limited after {retries} retries")


def _floor(moment: datetime, step: timedelta) -> datetime:
    """Start of the bar of length ``step`` that contains ``moment`` (epoch-aligned)."""
    return moment - (moment - from_epoch_ms(0)) % step


def _retry_after(exc: BinanceAPIException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _keep_text(frame: str | bytes) -> str | bytes:
    return frame


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


async def _stop_pump(pump: asyncio.Task[None], conn: _Connection) -> None:
    """Stop the pump task for sure.

    Python 3.11's ``asyncio.wait_for`` (inside python-binance's ``recv``) can swallow
    a cancellation when a frame arrives at the same moment, so the pump also checks
    ``conn.closing`` and cancellation is repeated until the task has ended.
    """
    conn.closing = True
    while not pump.done():
        pump.cancel()
        await asyncio.wait({pump}, timeout=0.1)
    if not pump.cancelled() and pump.exception() is not None:
        log.debug("pump ended with %s", describe(pump.exception()))  # type: ignore[arg-type]


async def _close_socket(socket: Any) -> None:
    """Tear a python-binance socket down quickly, even when the server went silent.

    Its read loop only notices EXITING between receives, so the websocket is closed
    first to wake it; the whole teardown is bounded so a wedged socket cannot hang us.
    """
    socket.ws_state = WSListenerState.EXITING
    try:
        async with asyncio.timeout(5):
            if socket.ws is not None:
                await socket.ws.close()
            await socket.__aexit__(None, None, None)
    except Exception as exc:
        log.debug("socket teardown: %s", describe(exc))
