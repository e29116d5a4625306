"""RedisStreamFeed: bars from another quantcore process, read from Redis Streams.

Reads the streams a :class:`~quantcore.sinks.redis_streams.RedisStreamPublisher`
writes, through a consumer group so progress survives restarts: on every (re)connect
it first re-reads this consumer's pending (delivered, unacknowledged) entries, then
new ones, and XACKs an entry only after it went through :meth:`DataFeed.offer`, so
ordering and dedupe hold exactly as for the exchange feed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import KeyT, StreamIdT

from quantcore.backoff import Backoff, describe
from quantcore.bus import EventBus
from quantcore.events import BarEvent, FeedState, epoch_ms
from quantcore.feeds.base import DataFeed, ReconnectPolicy, StreamKey
from quantcore.sinks.redis_streams import (
    DEFAULT_PREFIX,
    DEFAULT_URL,
    connect,
    partial_stream_name,
    stream_name,
)
from quantcore.sinks.redis_streams import entry_id as bar_entry_id
from quantcore.sinks.rows import from_fields

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str]]
"""(entry id, fields); fields are empty for a pending entry trimmed away since."""

_LIVE, _PENDING = ">", "0"


def _entries(response: Any) -> list[tuple[str, list[Entry]]]:
    """XREAD/XREADGROUP reply (RESP2 list or RESP3 map) → [(stream, [(id, fields)])]."""
    pairs = response.items() if isinstance(response, dict) else (response or ())
    return [
        (str(key), [(str(entry_id), dict(fields or {})) for entry_id, fields in items])
        for key, items in pairs
    ]


class RedisStreamFeed(DataFeed):
    """Closed bars (and optionally in-progress updates) for ``streams`` from Redis.

    ``group`` names the consuming process: give each process its own group (every group
    sees every bar; consumers of one group would split them). ``consumer`` must be
    stable across restarts, because pending entries belong to a consumer name.
    """

    def __init__(
        self,
        bus: EventBus,
        streams: Iterable[StreamKey],
        *,
        group: str,
        consumer: str = "main",
        url: str = DEFAULT_URL,
        prefix: str = DEFAULT_PREFIX,
        partials: bool = False,
        count: int = 500,
        block: float = 1.0,
        backoff: Backoff | None = None,
        name: str = "redis",
    ) -> None:
        super().__init__(bus, streams, name)
        if count < 1 or block <= 0:
            raise ValueError("count must be >= 1 and block > 0 seconds")
        self.group = group
        self.consumer = consumer
        self.url = url
        self.prefix = prefix
        self.partials = partials
        self.count = count
        self.block_ms = max(1, round(block * 1000))
        self.backoff = backoff or Backoff(initial=0.2, maximum=5.0)
        self._keys: dict[str, StreamKey] = {stream_name(prefix, *key): key for key in self.streams}
        self._stopping = asyncio.Event()
        self._redis = connect(url, socket_timeout=block + 10.0)

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Read until :meth:`stop`; the read in progress is finished (≤ ``block`` s), not cut."""
        tasks = [
            asyncio.create_task(
                self.supervise(self._session, ReconnectPolicy(self.backoff), self._stopping),
                name=f"{self.name}:closed",
            )
        ]
        if self.partials:
            tasks.append(asyncio.create_task(self._follow_partials(), name=f"{self.name}:partial"))
        try:
            await self._stopping.wait()
            await asyncio.wait(tasks, timeout=self.block_ms / 1000 + 2.0)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._redis.aclose()
            self.report(FeedState.STOPPED, self.stats.summary())

    async def _session(self) -> bool:
        """Join the group and read until the connection fails; True once it went live."""
        live = False
        try:
            detail = f"group {self.group} on {len(self._keys)} streams"
            self.report(FeedState.CONNECTING, detail)
            await self._ensure_groups()
            self.report(FeedState.CONNECTED, f"group {self.group}, consumer {self.consumer}")
            await self._read(pending=True)
            if self._stopping.is_set():
                return live
            self.report(FeedState.LIVE, f"group {self.group}")
            live = True
            await self._read(pending=False)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            self.stats.errors += 1
            self.report(FeedState.DISCONNECTED, describe(exc), logging.WARNING)
        except ResponseError as exc:
            self.stats.errors += 1
            self.report(FeedState.ERROR, describe(exc), logging.WARNING)
        except Exception as exc:
            self.stats.errors += 1
            self.report(FeedState.ERROR, describe(exc), logging.ERROR, exc)
        return live

    async def _ensure_groups(self) -> None:
        """Create the group where missing, from the stream's start (also after a Redis wipe)."""
        for key in self._keys:
            try:
                await self._redis.xgroup_create(key, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def _read(self, *, pending: bool) -> None:
        """Pending mode returns once every stream's pending list is exhausted; live never."""
        start = _PENDING if pending else _LIVE
        ids: dict[KeyT, StreamIdT] = {key: start for key in self._keys}
        while ids and not self._stopping.is_set():
            response = await self._redis.xreadgroup(
                self.group,
                self.consumer,
                ids,
                count=self.count,
                block=None if pending else self.block_ms,
            )
            for key, entries in _entries(response):
                if pending:
                    if not entries:
                        ids.pop(key, None)
                        continue
                    ids[key] = entries[-1][0]
                done = await self._deliver(key, entries)
                if done:
                    await self._redis.xack(key, self.group, *(entry_id for entry_id, _ in done))

    async def _deliver(self, name: str, entries: list[Entry]) -> list[Entry]:
        """Offer each entry's bar; returns the entries handled (all, unless stopped midway)."""
        key = self._keys[name]
        for n, (entry_id, fields) in enumerate(entries):
            if self._stopping.is_set():
                return entries[:n]
            self.stats.frames += 1
            bar = self._decode(key, entry_id, fields)
            if bar is None or not bar.closed:
                continue
            due = self.offer(bar)
            if due is not None:
                await self._backfill(name, key, due, bar)
                if self.offer(bar) is not None:
                    self.report(
                        FeedState.ERROR,
                        f"{key[0]} {key[1]}: bars from {due:%Y-%m-%d %H:%M} to before "
                        f"{bar.open_time:%Y-%m-%d %H:%M} are not in the stream; publishing on",
                        logging.WARNING,
                    )
                    self.publish_closed(bar, backfilled=False)
        return entries

    async def _backfill(self, name: str, key: StreamKey, due: datetime, bar: BarEvent) -> None:
        """Fill a hole from the stream's history (XRANGE), e.g. after local data was lost."""
        start, end = bar_entry_id(epoch_ms(due)), bar_entry_id(bar.open_time_ms)
        while True:
            history: Any = await self._redis.xrange(name, min=start, max=f"({end}", count=1000)
            for found, fields in _entries([(name, history)])[0][1]:
                old = self._decode(key, found, fields)
                if old is not None and old.closed:
                    self.publish_closed(old, backfilled=True)
                start = f"({found}"
            if len(history) < 1000:
                return

    def _decode(self, key: StreamKey, entry_id: str, fields: dict[str, str]) -> BarEvent | None:
        if not fields:
            self.stats.stale += 1
            return None
        try:
            bar = from_fields(fields)
            if bar.key != key:
                raise ValueError(f"entry of {bar.key} in the stream of {key}")
        except ValueError as exc:
            self.stats.malformed += 1
            self.report(FeedState.MALFORMED, f"{entry_id}: {exc}", logging.WARNING)
            return None
        return bar

    async def _follow_partials(self) -> None:
        """Best effort: XREAD (no group) from the newest entry; outages just skip updates."""
        keys = {partial_stream_name(self.prefix, *key): key for key in self.streams}
        ids: dict[KeyT, StreamIdT] = {key: "$" for key in keys}
        attempt = 0
        while not self._stopping.is_set():
            try:
                response = await self._redis.xread(ids, count=self.count, block=self.block_ms)
                attempt = 0
            except (RedisError, OSError) as exc:
                log.debug("%s: partial updates paused: %s", self.name, describe(exc))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.backoff.delay(attempt))
                attempt += 1
                continue
            for key, entries in _entries(response):
                for entry_id, fields in entries:
                    ids[key] = entry_id
                    self.stats.frames += 1
                    bar = self._decode(keys[key], entry_id, fields)
                    if bar is not None and not bar.closed:
                        self.offer_partial(self.sequencers[bar.key], bar, anchor=False)
