"""BinanceKlineFeed: pumps each connection's frames through the codec to the ordering.

Independent jobs, so none can stall another: a supervisor per connection (``supervisor.py``),
the settler (``settler.py``: bars the stream did not deliver, from REST on evidence), and
the ordering (``DataFeed`` in ``feeds/base.py``: closed bars strictly in order, each once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from functools import partial
from typing import Any

from quantcore.bus import EventBus
from quantcore.events import BAR_PARTIAL, BarEvent, FeedState, epoch_ms
from quantcore.feeds.base import StreamKey
from quantcore.feeds.binance.clock import ExchangeClock
from quantcore.feeds.binance.codec import KlineCodec, KlineParseError
from quantcore.feeds.binance.forming import FormingBars
from quantcore.feeds.binance.limits import RestLimits, connection_budget
from quantcore.feeds.binance.rest import BackfillError, BinanceRest
from quantcore.feeds.binance.settings import BinanceFeedSettings
from quantcore.feeds.binance.settler import StreamState, StreamWait
from quantcore.feeds.binance.stream_socket import SocketClosed
from quantcore.feeds.binance.supervisor import Connection, ConnectionSupervisor, Link, StreamLost
from quantcore.feeds.binance.symbols import SymbolCheck
from quantcore.feeds.snapshot import ConnectionHealth, FeedHealth, RestWeight
from quantcore.intervals import interval_ms

__all__ = ["BackfillError", "BinanceFeedSettings", "BinanceKlineFeed", "StreamWait"]

log = logging.getLogger(__name__)


class BinanceKlineFeed(ConnectionSupervisor):
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
        self._settle_lock = asyncio.Lock()
        self.clock = ExchangeClock()
        """The stream whose recorded history contradicts the exchange, if that is fatal."""
        self.connections: list[Connection] = []
        """The planned connections (set by :meth:`run`), read by the metrics exporter."""
        self.states: dict[StreamKey, StreamState] = {
            key: StreamState(key, interval_ms(key[1]), sequencer)
            for key, sequencer in self.sequencers.items()
        }
        self.connect_budget = connection_budget(self.settings.ws_url, self.settings.connect_limits)
        self.venue = self.settings.venue
        limits = self.settings.rest_limits or RestLimits()
        self.rest = BinanceRest(self.settings.rest_url, self.venue, limits, self.stats)
        self.rest_budget = self.rest.budget
        self.symbol_check = SymbolCheck(self.rest, (symbol for symbol, _ in self.sequencers), name)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def exchange_ms(self) -> int:
        return self.clock.now_ms()

    def health_snapshot(self) -> FeedHealth:
        """Connections, halted streams, held bars and REST weight, for /health and /metrics."""
        stall, budget = self.settings.stall_timeout, self.rest_budget
        connections = tuple(
            ConnectionHealth(
                frozenset(s.key for s in c.streams), c.label, c.state,
                c.reconnects, c.stalls, c.last_data, c.quiet_at, c.stalled_at,
            )
            for c in self.connections
        )  # fmt: skip
        return FeedHealth(
            self.settings.settle + stall + self.settings.poll,
            2 * stall,
            connections,
            frozenset(key for key, state in self.states.items() if state.halted),
            self.waits(),
            RestWeight(budget.used_reported, budget.limits.weight_per_minute, budget.spent),
        )

    # -- lifecycle -----------------------------------------------------------------------

    async def run(self) -> None:
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
            await self.rest.aclose()
            self.report(FeedState.STOPPED, self.stats.summary())
            if len(self.sequencers) > 1:
                log.info("%s: bars per stream: %s", self.name, self.stream_summary())

    async def _pump(self, link: Link, conn: Connection) -> None:
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
