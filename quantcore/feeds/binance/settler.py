"""The settler: every closed bar the live stream did not deliver, from REST, on evidence.

Rules (what makes a REST row trustworthy, and when a bar is declared absent):

- A REST row is final only when the same REST answer already serves a *later* bar of the
  stream: REST lags the stream (by seconds, sometimes minutes) and shows its newest bars as
  they stood earlier, still forming; once it serves a later bar, its view has moved past
  that close. The last row of an answer is therefore never published. ``settle`` (default
  0) only adds a margin: a trusted row's close must also be that much older than the
  exchange's clock.
- A bar missing from REST is declared absent ("the exchange has none") on the same
  evidence, REST serving a later bar; it goes out as a :class:`GapEvent`.
- Until then, live closed bars behind the hole wait in order (held, never dropped); the
  wait is logged once when it starts and once when it ends, and :meth:`waits` reports it.
- A stream's first catch-up fetches every bar since its resume point, however long;
  ``backfill_limit`` (opt-in) caps it, and the skipped range goes out as a GapEvent.
- Only a resume point read from a file at startup can be "in the future" of the
  exchange's clock (a fatal contradiction); live bars never are.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from quantcore.events import (
    GAP,
    BarEvent,
    FeedState,
    GapEvent,
    GapReason,
    epoch_ms,
    from_epoch_ms,
    utc_text,
)
from quantcore.feeds.base import DataFeed, StreamKey, StreamSequencer
from quantcore.feeds.binance.clock import ExchangeClock
from quantcore.feeds.binance.codec import KlineCodec, KlineParseError
from quantcore.feeds.binance.rest import BackfillError, BinanceRest
from quantcore.feeds.binance.settings import BinanceFeedSettings
from quantcore.feeds.binance.symbols import SymbolCheck
from quantcore.feeds.binance.venues import Venue
from quantcore.intervals import bar_open_ms
from quantcore.progress import progress

log = logging.getLogger(__name__)

PROGRESS_MIN_PAGES = 3
"""A catch-up of more REST pages than this shows a progress bar with an ETA."""
ASK_AFTER_MS = 3_000
"""Exchange ms after a bar's close before REST is asked for it: its ``x:true`` is late
(Binance: 70-430 ms), not lost, this soon."""
DAY_MS = 86_400_000
"""A catch-up longer than two days takes its whole days from the archive (if one is set)."""
RETRY_MS = (1_000, 16_000)
"""Exchange ms before REST is asked again after an answer without evidence: doubles
from the first to the second while REST stays behind."""


@dataclass(frozen=True, slots=True)
class StreamWait:
    """One stream's live closed bars waiting for REST to fill the hole before them."""

    since: datetime
    """Wall-clock time (UTC) the wait started."""
    held: int
    """Live closed bars held behind the hole."""
    missing_from: datetime
    """Open time of the first bar REST must still serve (or show absent)."""


@dataclass(slots=True, eq=False)
class StreamState:
    """What the feed knows of one stream beyond its sequencer."""

    key: StreamKey
    step_ms: int
    sequencer: StreamSequencer
    seen_open: datetime | None = None
    """Open time of the newest bar seen in a frame or a probe."""
    seen_trades: int = -1
    caught_up: bool = False
    """Set at the first catch-up: only that one may be capped by backfill_limit."""
    halted: bool = False
    resume_ms: int | None = None
    """The resume point read from a file at startup, until checked against the exchange."""
    recorded: bool = False
    """Something of this stream is (or was) recorded: a skipped range is worth a GapEvent."""
    live_from_ms: int | None = None
    """Open time of the earliest closed bar the live socket may still deliver (set when a
    capped first catch-up is due): the cap never skips a bar already in flight."""
    waiting_since: float | None = None
    """Wall time the held bars started waiting (None: not waiting)."""
    ask_at_ms: int = 0
    """Exchange time before which REST is not asked again (it showed no evidence yet)."""
    misses: int = 0


class ArchiveDays(Protocol):
    """Whole archived days of a long catch-up (``history.catchup.ArchiveCatchUp``)."""

    async def publish_days(
        self, feed: SettlingFeed, state: StreamState, start_ms: int, server_now: int
    ) -> int: ...


class SettlingFeed(DataFeed):
    """The settling half of the Binance feed: REST catch-up, held bars, gap events."""

    settings: BinanceFeedSettings
    states: dict[StreamKey, StreamState]
    clock: ExchangeClock
    venue: Venue
    rest: BinanceRest
    fatal_stream: StreamKey | None
    _codec: KlineCodec
    _stopping: asyncio.Event
    _wake: asyncio.Event
    _settle_lock: asyncio.Lock
    symbol_check: SymbolCheck
    archive: ArchiveDays | None = None
    """Whole archived days of a long outage come from here (set by the App), not REST."""

    async def server_time(self) -> int:
        """The exchange's clock in epoch ms, read over REST: what has settled is its call."""
        server_ms = await self.rest.server_time()
        self.clock.observe(server_ms)
        return server_ms

    def resume_after(self, key: StreamKey, open_time_ms: int) -> None:
        super().resume_after(key, open_time_ms)
        state = self.states[key]
        state.resume_ms = open_time_ms
        state.recorded = True

    def waits(self) -> dict[StreamKey, StreamWait]:
        """Streams whose live bars wait for REST now: since when, how many, from which bar."""
        out = {}
        for key, state in self.states.items():
            nxt = state.sequencer.next_open()
            if state.waiting_since is not None and state.sequencer.held and nxt is not None:
                since = datetime.fromtimestamp(state.waiting_since, UTC)
                out[key] = StreamWait(since, len(state.sequencer.held), nxt)
        return out

    # -- the loop ------------------------------------------------------------------------

    async def _settle_loop(self) -> None:
        """Ask REST, when due, for every closed bar the streams did not deliver."""
        settings = self.settings
        backoff = settings.reconnect.backoff
        failures = 0
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.poll)
            self._wake.clear()
            if self._stopping.is_set() or not self.symbol_check.done:
                continue
            try:
                await self._settle(self._due())
                failures = 0
            except BackfillError as exc:
                self.stats.errors += 1
                self.report(FeedState.ERROR, f"backfill failed: {exc}", logging.WARNING)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), backoff.delay(failures))
                failures += 1
            if self.fatal is not None:
                self.report(FeedState.ERROR, self.fatal, logging.ERROR)
                self.stop()

    async def _settle(self, due: list[StreamState], only: list[StreamState] | None = None) -> None:
        """One exact clock reading, then each due stream (of ``only``, if given) caught up;
        one settling at a time, so no bar is fetched twice."""
        async with self._settle_lock:
            due = [s for s in due if only is None or s in only]
            if not due:
                return
            server_now = await self.server_time()
            self._check_resume_points(due, server_now)
            if self.fatal is not None:
                return
            for state in due:
                await self._catch_up(state, server_now)

    def _due(self) -> list[StreamState]:
        """Streams REST should be asked about now (by the clock estimate): a first catch-up,
        a closed bar the stream did not deliver, or held bars; none asked again before
        REST could have moved on."""
        estimate = self.clock.now_ms() if self.clock.known else None
        grace = max(int(self.settings.settle * 1000), ASK_AFTER_MS)
        due = []
        for state in self.states.values():
            if state.halted:
                continue
            nxt = state.sequencer.next_open()
            if not state.caught_up:
                if nxt is not None or self.settings.warmup_bars:
                    due.append(state)
            elif nxt is not None and (
                estimate is None
                or (
                    estimate >= state.ask_at_ms
                    and (state.sequencer.held or epoch_ms(nxt) + state.step_ms + grace <= estimate)
                )
            ):
                due.append(state)
        return due

    def _check_resume_points(self, due: list[StreamState], server_now: int) -> None:
        """A resume point read from a file at startup must not be the exchange's forming bar
        or later: that history contradicts the exchange (fatal, named by the App)."""
        for state in due:
            resume = state.resume_ms
            if resume is None:
                continue
            state.resume_ms = None
            symbol, interval = state.key
            if resume + state.step_ms > bar_open_ms(server_now, interval):
                self.fatal_stream = state.key
                self.fatal = (
                    f"{symbol} {interval}: the last recorded bar ({utc_text(resume)}) "
                    f"is in the future of the exchange's clock ({utc_text(server_now)})"
                )
                return

    # -- one stream ----------------------------------------------------------------------

    async def _catch_up(self, state: StreamState, server_now: int) -> None:
        """Publish what REST proves final since the stream's next bar, then the held bars."""
        sequencer = state.sequencer
        step = state.step_ms
        current = bar_open_ms(server_now, state.key[1])
        nxt = sequencer.next_open()
        if nxt is None:
            if not self.settings.warmup_bars:
                return
            start = current - self.settings.warmup_bars * step
            sequencer.last = from_epoch_ms(start - step)
        else:
            start = epoch_ms(nxt)
        if not state.caught_up:
            state.caught_up = True
            start = self._cap(state, start, current)
        before = sequencer.last
        self.release(state.sequencer)
        start = sequencer_next(state) or start
        if not sequencer.held or start < sequencer.held[0].open_time_ms:
            await self._fetch(state, start, server_now)
        self.release(state.sequencer)
        nxt = sequencer.next_open()
        behind = nxt is not None and epoch_ms(nxt) + step <= server_now
        if (sequencer.held or behind) and sequencer.last == before:
            first, most = RETRY_MS
            state.ask_at_ms = server_now + min(most, first << min(state.misses, 8))
            state.misses += 1
        else:
            state.ask_at_ms, state.misses = 0, 0
        self._note_wait(state)

    def _cap(self, state: StreamState, start: int, current: int) -> int:
        """Apply the opt-in ``backfill_limit`` to a first catch-up: skip (and announce as a
        GapEvent) what lies beyond it, never a bar the live socket may still deliver."""
        limit = self.settings.backfill_limit
        if limit is None:
            return start
        oldest = current - limit * state.step_ms
        if state.live_from_ms is not None:
            oldest = min(oldest, state.live_from_ms)
        if state.sequencer.held:
            oldest = min(oldest, state.sequencer.held[0].open_time_ms)
        if start >= oldest:
            return start
        symbol, interval = state.key
        log.warning(
            "%s: %s %s: %d bars since %s exceed backfill_limit=%d; starting at %s "
            "(the skipped range is written down as a known gap)",
            self.name, symbol, interval, (current - start) // state.step_ms,
            from_epoch_ms(start), limit, from_epoch_ms(oldest),
        )  # fmt: skip
        state.sequencer.last = from_epoch_ms(oldest - state.step_ms)
        self._gap(state, start, oldest - state.step_ms, GapReason.BACKFILL_LIMIT)
        return oldest

    async def _fetch(self, state: StreamState, start_ms: int, server_now: int) -> None:
        """Page through REST from ``start_ms`` (up to the newest held bar) and publish every
        row a later row proves final, the live held bars taking precedence; a bar REST
        skips while serving a later one is absent.

        Pages up to ``klines_limit`` rows at a time (the last row of a page opens the next),
        asking no more rows than the hole needs (futures weigh by ``limit``); more than
        ``PROGRESS_MIN_PAGES`` pages draw a progress bar on a terminal. Logs one line.
        """
        symbol, interval = state.key
        step = state.step_ms
        if self.archive is not None and server_now - start_ms > 2 * DAY_MS:
            start_ms = await self.archive.publish_days(self, state, start_ms, server_now)
        trusted_ms = server_now - int(self.settings.settle * 1000)
        end_ms = state.sequencer.held[-1].open_time_ms if state.sequencer.held else None
        page = self.venue.klines_limit
        top = end_ms if end_ms is not None else bar_open_ms(server_now, interval)
        expected = (top - start_ms) // step
        shown = progress(expected, f"backfill {symbol} {interval}") if (
            expected > PROGRESS_MIN_PAGES * page
        ) else None  # fmt: skip
        began = time.monotonic()
        published = absent = 0
        cursor = start_ms
        limit = min(page, max(2, (top - cursor) // step + 2))
        try:
            while not self._stopping.is_set():
                rows = await self.rest.klines(symbol, interval, cursor, end_ms, limit)
                received = time.time_ns()
                bars = [self._parse_row(symbol, interval, row, received) for row in rows]
                for n, bar in enumerate(bars):
                    open_ms = bar.open_time_ms
                    if open_ms > trusted_ms:
                        break
                    absent += self._advance_to(state, open_ms)
                    last_row = n == len(bars) - 1
                    if last_row or open_ms + step > trusted_ms:
                        break
                    if sequencer_next(state) == open_ms:
                        published += self.publish_closed(bar, backfilled=True)
                if shown is not None:
                    shown.update(max(0, len(bars) - 1))
                if len(rows) < limit or bars[-1].open_time_ms <= cursor:
                    break
                cursor, limit = bars[-1].open_time_ms, page
        finally:
            if shown is not None:
                shown.close()
        if published or absent:
            log.info(
                "%s: %s %s: backfilled %d bars (%s .. %s) in %.1fs%s",
                self.name, symbol, interval, published, from_epoch_ms(start_ms),
                state.sequencer.last, time.monotonic() - began,
                f"; {absent} absent on the exchange" if absent else "",
            )  # fmt: skip

    def _parse_row(self, symbol: str, interval: str, row: Any, received: int) -> BarEvent:
        try:
            return self._codec.parse_rest_row(symbol, interval, row, received)
        except KlineParseError as exc:
            self.stats.malformed += 1
            raise BackfillError(f"{symbol} {interval}: bad REST row: {exc}") from exc

    def _advance_to(self, state: StreamState, open_ms: int) -> int:
        """REST serves the bar opening at ``open_ms``: every bar before it that is neither
        published nor held is absent on the exchange. Releases held bars on the way;
        returns the number of bars declared absent."""
        absent = 0
        while True:
            self.release(state.sequencer)
            nxt = sequencer_next(state)
            if nxt is None or nxt >= open_ms:
                return absent
            stop = open_ms
            if state.sequencer.held:
                stop = min(stop, state.sequencer.held[0].open_time_ms)
            if stop <= nxt:
                return absent
            last = stop - state.step_ms
            state.sequencer.last = from_epoch_ms(last)
            absent += (stop - nxt) // state.step_ms
            self.stats.absent += (stop - nxt) // state.step_ms
            log.warning(
                "%s: %s %s: REST serves %s but no bar %s .. %s: the exchange has none",
                self.name, *state.key, utc_text(open_ms), utc_text(nxt), utc_text(last),
            )  # fmt: skip
            self._gap(state, nxt, last, GapReason.EXCHANGE)

    def _gap(self, state: StreamState, first_ms: int, last_ms: int, reason: GapReason) -> None:
        """Announce bars that will never be published (if anything of the stream is kept)."""
        if state.recorded or self.stream_bars[state.key]:
            symbol, interval = state.key
            first, last = from_epoch_ms(first_ms), from_epoch_ms(last_ms)
            self.bus.publish(GAP, GapEvent(symbol, interval, first, last, reason))

    # -- live closed bars ----------------------------------------------------------------

    def _on_closed(self, state: StreamState, bar: BarEvent) -> None:
        """A live closed bar, in order (:meth:`DataFeed.hold`); a new hole wakes the settler."""
        if self.hold(state.sequencer, bar):
            self._wake.set()
        elif not state.sequencer.held and state.waiting_since is not None:
            self._note_wait(state)

    def _note_wait(self, state: StreamState) -> None:
        """One log line when held bars start waiting for REST, one when the wait ends."""
        symbol, interval = state.key
        nxt = state.sequencer.next_open()
        if state.sequencer.held and state.waiting_since is None and nxt is not None:
            state.waiting_since = time.time()
            log.info(
                "%s: %s %s: %d live bars held until REST serves a bar after %s (REST lags)",
                self.name, symbol, interval, len(state.sequencer.held), nxt,
            )  # fmt: skip
        elif not state.sequencer.held and state.waiting_since is not None:
            log.info(
                "%s: %s %s: REST caught up after %.1fs; held bars released",
                self.name, symbol, interval, time.time() - state.waiting_since,
            )  # fmt: skip
            state.waiting_since = None


def sequencer_next(state: StreamState) -> int | None:
    """The stream's next due open time in epoch ms (None before anything is known)."""
    nxt = state.sequencer.next_open()
    return None if nxt is None else epoch_ms(nxt)
