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
from quantcore.feeds.binance.codec import KlineCodec, KlineParseError, RawKline
from quantcore.feeds.binance.limits import RestLimits, connection_budget
from quantcore.feeds.binance.rest import BackfillError, BinanceRest
from quantcore.feeds.binance.settings import BinanceFeedSettings
from quantcore.feeds.binance.settler import StreamState, StreamWait
from quantcore.feeds.binance.supervisor import Connection, ConnectionSupervisor, Link, StreamLost
from quantcore.feeds.binance.symbols import SymbolCheck
from quantcore.feeds.binance.transport import SocketClosed
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
        """Every frame of the link through the codec to :meth:`_on_bar`, until it ends."""
        loop = asyncio.get_running_loop()
        stats = self.stats
        codec = self._codec
        parse, read, convert = codec.parse, codec.read, codec.convert
        on_bar, on_unheard = self._on_bar, self._on_unheard
        heard = partial(self.bus.has_subscribers, BAR_PARTIAL)
        clock = time.time_ns

        def on_frame(message: Any) -> None:
            now = conn.last_frame = conn.last_data = loop.time()
            received = clock()
            link.frames += 1
            stats.frames += 1
            try:
                if type(message) is bytes or type(message) is str:
                    k, event_ms = read(message)
                    if not k.x and not heard():
                        on_unheard(k, event_ms, now)
                        return
                    bar = convert(k, event_ms, received)
                else:
                    bar = parse(message, received)
            except KlineParseError as exc:
                self._not_a_kline(message, exc, conn)
                return
            on_bar(bar, now)

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
                self.offer_partial(state.sequencer, bar)
            return
        self._on_closed(state, bar)

    def _on_unheard(self, k: RawKline, event_ms: int, now: float) -> None:
        """An in-progress update nobody subscribes to (``bar.partial``): the same stream
        state as :meth:`_on_bar` keeps, without floats or a BarEvent (its prices are
        not even checked: they reach nothing)."""
        state = self.states.get((k.s, k.i))
        if state is None:
            self.stats.stale += 1
            return
        open_time = self._codec.time(k.t)
        seen = state.seen_open
        sequencer = state.sequencer
        if seen is None or open_time > seen:
            state.seen_open = open_time
            self.clock.observe(event_ms, now)
            due = sequencer.next_open()
            if due is not None and open_time > due:
                self._wake.set()  # the x:true of an earlier bar never came: settle it
        if k.n > state.seen_trades or open_time != seen:
            state.seen_trades = k.n
        last = sequencer.last
        if self.bar_limit is not None and self.limit_reached:
            self.stats.stale += 1
            return
        if last is None:
            sequencer.anchor(open_time)
        elif open_time <= last:
            self.stats.stale += 1
            return
        self.stats.partials += 1
