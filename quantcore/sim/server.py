"""`LocalExchange`: Binance's public market-data API (REST + WebSocket) on 127.0.0.1.

One aiohttp server on one port composes the venue's REST endpoints (`.rest`), the stream
server (`.ws_hub`) and the archive (`.archive`) closely enough that python-binance's clients
work unchanged once their base URLs point here; this module owns the lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from types import TracebackType

from aiohttp import web

from quantcore.feeds.binance.venues import SPOT, Venue

from .archive import ArchiveServer
from .faults import FaultInjection
from .generator import RandomWalkSource
from .klines import Kline
from .limits import Limits
from .market import Market
from .realism import Realism
from .rest import RestApi
from .sources import KlineSource
from .ws_hub import WsEndpoint

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"


class LocalExchange(FaultInjection):
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
        self._rest = RestApi(self.market, venue)
        self._ws = WsEndpoint(self.market, venue.max_streams, heartbeat, pong_timeout)
        self.archive = ArchiveServer(self.market, venue)
        """The public archive of its own bars (``/data/...``, see :mod:`.archive`)."""
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
            self.market.run(self._ws.hub), name="quantcore.sim.market"
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
        app = web.Application(middlewares=[self._rest.weigh])
        self._rest.add_routes(app)
        self._ws.add_routes(app)
        self.archive.add_routes(app)
        runner = web.AppRunner(
            app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=1.0,
            max_line_size=1 << 17,  # a combined URL with 1024 streams is ~40 kB
        )
        await runner.setup()
        site = web.TCPSite(runner, HOST, port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = runner.addresses[0][1]
        self._ws.start()

    async def _stop_web(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        await self._ws.stop()
        await runner.cleanup()

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

    async def restart(self, down_seconds: float = 0.0) -> None:
        """Stop the HTTP/WS server (listener closed, connections aborted) and start it again
        on the same port after `down_seconds`; the market clock and history are unaffected."""
        await self._stop_web()
        await asyncio.sleep(down_seconds)
        await self._start_web(self.port)


def _report_failure(task: asyncio.Task[None]) -> None:
    """Log a playback crash at once (stop() re-raises it later)."""
    if not task.cancelled() and task.exception() is not None:
        _log.error("market playback failed", exc_info=task.exception())
