"""RedisStreamPublisher: closed bars fanned out to other processes through Redis Streams.

Layout (the contract with :class:`quantcore.feeds.redis_stream.RedisStreamFeed`): one
stream per (symbol, interval), ``{prefix}:{symbol}:{interval}``, whose entry id is
``{open_time_ms}-0``; Redis itself rejects an id not above the stream's last one, so a
replayed or backfilled bar is never added twice. In-progress updates, if enabled, go
to ``...:partial`` with automatic ids: they are ephemeral and must not sit in the
consumer groups' pending lists.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError
from redis.typing import EncodableT, FieldT

from quantcore.backoff import describe
from quantcore.events import BarEvent, FeedState
from quantcore.sinks.base import BufferedSink
from quantcore.sinks.rows import to_fields

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "quantcore:bars"


def stream_name(prefix: str, symbol: str, interval: str) -> str:
    """The stream of closed bars, e.g. ``quantcore:bars:BTCUSDT:1m``."""
    return f"{prefix}:{symbol}:{interval}"


def partial_stream_name(prefix: str, symbol: str, interval: str) -> str:
    """The stream of in-progress updates, e.g. ``quantcore:bars:BTCUSDT:1m:partial``."""
    return f"{stream_name(prefix, symbol, interval)}:partial"


def entry_id(open_time_ms: int) -> str:
    """The stream entry id of a closed bar: its open time, so it is also the dedupe key."""
    return f"{open_time_ms}-0"


def connect(url: str, socket_timeout: float = 10.0) -> aioredis.Redis:
    """A client whose commands fail fast (no hidden retries): callers own the backoff."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=min(socket_timeout, 5.0),
        socket_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )


def is_duplicate_id(exc: BaseException) -> bool:
    """XADD refused an explicit id not above the stream's top: the bar is already there."""
    return isinstance(exc, ResponseError) and "equal or smaller" in str(exc)


def _fields(bar: BarEvent) -> dict[FieldT, EncodableT]:
    return {key: value for key, value in to_fields(bar).items()}


class RedisStreamPublisher(BufferedSink):
    """XADDs each closed bar to its stream (trimmed to about ``maxlen`` entries).

    ``max_delay`` defaults to 0: bars go out as soon as the writer task runs, several per
    pipeline under load. With ``partials`` on, in-progress updates are sent only while
    Redis is healthy and nothing is backed up; stale ones are never buffered.
    """

    defaults = {"max_delay": 0.0}
    venue_params = {"prefix": "key"}

    def __init__(
        self,
        *,
        url: str = DEFAULT_URL,
        prefix: str = DEFAULT_PREFIX,
        maxlen: int = 100_000,
        partials: bool = False,
        partial_maxlen: int = 1_000,
        name: str | None = None,
        **settings: float | str,
    ) -> None:
        super().__init__(name, settings)
        if maxlen < 1 or partial_maxlen < 1:
            raise ValueError(
                "maxlen and partial_maxlen must be >= 1, "
                f"got maxlen={maxlen!r} partial_maxlen={partial_maxlen!r}"
            )
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self.partials = partials
        self.partial_maxlen = partial_maxlen
        self.duplicates = 0
        self.partials_skipped = 0
        self._redis: aioredis.Redis | None = None
        self._resume: dict[tuple[str, str], int] = {}

    def wants(self, handler: str) -> bool:
        return handler != "on_bar_partial" or self.partials

    def on_bar_partial(self, bar: BarEvent) -> None:
        buffer = self.buffer
        if buffer.healthy and not buffer.refusing and len(buffer) < buffer.batch_size:
            self.buffer.put(bar)
        else:
            self.partials_skipped += 1

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = connect(self.url)
        return self._redis

    async def open(self) -> None:
        try:
            for symbol, interval in self.context.streams:
                last = await self._client().xrevrange(
                    stream_name(self.prefix, symbol, interval), count=1
                )
                if last:
                    self._resume[(symbol, interval)] = int(str(last[0][0]).partition("-")[0])
        except (RedisError, OSError) as exc:
            self.buffer.mark_down(describe(exc))
            detail = (
                "Redis unavailable at start (buffering; its own range is filled when it "
                f"answers): {describe(exc)}"
            )
            self.report(FeedState.ERROR, detail, logging.WARNING)
        else:
            self.report(FeedState.CONNECTED, f"streams {self.prefix}:*")

    def stored_resume_point(self, symbol: str, interval: str) -> int | None:
        return self._resume.get((symbol, interval))

    def destination(self) -> str:
        info = self._client().connection_pool.connection_kwargs
        return f"redis {info.get('host')}:{info.get('port')}/{info.get('db')} {self.prefix}"

    async def read_last(self, symbol: str, interval: str) -> int | None:
        last = await self._client().xrevrange(stream_name(self.prefix, symbol, interval), count=1)
        return int(str(last[0][0]).partition("-")[0]) if last else None

    async def write_batch(self, batch: list[BarEvent]) -> None:
        pipe = self._client().pipeline(transaction=False)
        for bar in batch:
            if bar.closed:
                pipe.xadd(
                    stream_name(self.prefix, bar.symbol, bar.interval),
                    _fields(bar),
                    id=entry_id(bar.open_time_ms),
                    maxlen=self.maxlen,
                    approximate=True,
                )
            else:
                pipe.xadd(
                    partial_stream_name(self.prefix, bar.symbol, bar.interval),
                    _fields(bar),
                    maxlen=self.partial_maxlen,
                    approximate=True,
                )
        for result in await pipe.execute(raise_on_error=False):
            if isinstance(result, BaseException):
                if not is_duplicate_id(result):
                    raise result
                self.duplicates += 1

    async def close(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()
