"""The local exchange's public archive: Binance's data.binance.vision layout for its own bars.

``GET /data/{spot|futures/um|futures/cm}/{daily|monthly}/klines/{SYMBOL}/{interval}/
{SYMBOL}-{interval}-{YYYY-MM-DD|YYYY-MM}.zip`` (and ``.zip.CHECKSUM``) serves the bars the
exchange's REST serves, as Binance writes them (binance-public-data README): one CSV in a
zip, REST's twelve columns and decimal strings; spot open/close times in microseconds
from 2025-01-01 on (milliseconds before), futures files with a header row (COIN-M names
its columns as Binance does), spot files without. The CHECKSUM is ``sha256sum`` output
(``<hex>  <file name>``). Not found (404): another venue's path, a file that ends before
the symbol's first bar, today's daily file, the current month's monthly file, planted
missing days. Zips are built on request from the source bars and cached.
"""

from __future__ import annotations

import asyncio
import calendar
import hashlib
import io
import re
import time
import zipfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiohttp import web

from quantcore.feeds.binance.venues import Venue

from .klines import DAY_MS, HOUR_MS, Bar, units_str
from .market import Market
from .sources import KlineSource

MARKETS = {"binance-spot": "spot", "binance-usdm": "futures/um", "binance-coinm": "futures/cm"}
"""Venue name → the archive's market folder."""
MICROSECONDS_FROM_MS = 1_735_689_600_000
"""2025-01-01 00:00 UTC: spot files of this day (and month) on hold times in microseconds."""
UM_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,"
    "taker_buy_volume,taker_buy_quote_volume,ignore\n"
)
CM_HEADER = (
    "open_time,open,high,low,close,volume,close_time,base_volume,count,"
    "taker_buy_volume,taker_buy_base_volume,ignore\n"
)
_PATH = re.compile(
    r"^(spot|futures/um|futures/cm)/(daily|monthly)/klines/([A-Z0-9_]+)/([0-9a-zA-Z]+)/"
    r"([A-Z0-9_]+)-([0-9a-zA-Z]+)-([0-9]{4}-[0-9]{2}(?:-[0-9]{2})?)\.zip(\.CHECKSUM)?$"
)


@dataclass(slots=True)
class ArchivePlants:
    """Faults planted in the archive, by day (``YYYY-MM-DD``); a planted day spoils its
    daily file and the monthly file that holds it."""

    missing: set[str] = field(default_factory=set)
    """404, though REST serves the day's bars."""
    corrupt: set[str] = field(default_factory=set)
    """Bytes altered after the CHECKSUM was computed (a mismatch)."""
    foreign: set[str] = field(default_factory=set)
    """A valid CHECKSUM over rows of the following day (refused as corrupt by a reader)."""
    incomplete: set[str] = field(default_factory=set)
    """The file lacks the day's 10:00-10:59 UTC bars (REST has them) and its 11:00 bar's
    volume is one unit (1e-8) above REST's (REST wins)."""


def period_bounds(period: str) -> tuple[int, int]:
    """``YYYY-MM-DD`` or ``YYYY-MM`` → [start, end) in epoch ms (UTC); ValueError if bad."""
    parts = [int(p) for p in period.split("-")]
    if len(parts) == 3:
        start = calendar.timegm((parts[0], parts[1], parts[2], 0, 0, 0))
        if time.strftime("%Y-%m-%d", time.gmtime(start)) != period:
            raise ValueError(f"not a date: {period}")
        return start * 1000, start * 1000 + DAY_MS
    year, month = parts
    if not 1 <= month <= 12:
        raise ValueError(f"not a month: {period}")
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    nxt = calendar.timegm((year + month // 12, month % 12 + 1, 1, 0, 0, 0))
    return start * 1000, nxt * 1000


def render_csv(bars: Iterable[Bar], venue_name: str, micros: bool) -> bytes:
    """The archive CSV of these bars: REST's columns and strings, the venue's header."""
    lines = []
    if venue_name == "binance-usdm":
        lines.append(UM_HEADER)
    elif venue_name == "binance-coinm":
        lines.append(CM_HEADER)
    scale, tail = (1000, 999) if micros else (1, 0)
    for b in bars:
        lines.append(
            f"{b.open_time * scale},{units_str(b.open)},{units_str(b.high)},{units_str(b.low)},"
            f"{units_str(b.close)},{units_str(b.volume)},{b.close_time * scale + tail},"
            f"{units_str(b.quote_volume)},{b.trades},{units_str(b.taker_base)},"
            f"{units_str(b.taker_quote)},0\n"
        )
    return "".join(lines).encode("ascii")


class ExchangeGaps(KlineSource):
    """``source`` without any bar opening in the given ``[start, end)`` ranges: hours the
    exchange has no data for (Binance's 2018-2020 maintenance), for REST and archive alike."""

    def __init__(self, source: KlineSource, ranges: Iterable[tuple[int, int]]) -> None:
        self.source = source
        self.symbol = source.symbol
        self.interval = source.interval
        self.interval_ms = source.interval_ms
        self.ranges = sorted(ranges)

    def _kept(self, open_ms: int) -> bool:
        return not any(lo <= open_ms < hi for lo, hi in self.ranges)

    @property
    def first_open_ms(self) -> int:
        return self.source.first_open_ms

    @property
    def end_ms(self) -> int | None:
        return self.source.end_ms

    def bars(self, start_ms: int, end_ms: int) -> list[Bar]:
        return [b for b in self.source.bars(start_ms, end_ms) if self._kept(b.open_time)]

    def next_open_ms(self, t_ms: int) -> int | None:
        nxt = self.source.next_open_ms(t_ms)
        while nxt is not None and not self._kept(nxt):
            nxt = self.source.next_open_ms(nxt + 1)
        return nxt


class ArchiveServer:
    """Serves the archive paths of one exchange's market and venue; counts what it serves."""

    def __init__(self, market: Market, venue: Venue, plants: ArchivePlants | None = None) -> None:
        self.market = market
        self.venue = venue
        self.folder = MARKETS.get(venue.name, "spot")
        self.plants = plants or ArchivePlants()
        self.downloads: Counter[str] = Counter()
        """Zip paths (``spot/daily/klines/...zip``) served with 200, and how often."""
        self._cache: dict[tuple[str, str, str], tuple[bytes, str]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/data/{path:.+}", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        match = _PATH.match(path)
        if match is None:
            raise web.HTTPNotFound()
        folder, kind, symbol, interval, symbol2, interval2, period, checksum = match.groups()
        if folder != self.folder or (symbol, interval) != (symbol2, interval2):
            raise web.HTTPNotFound()
        if (len(period) == 10) != (kind == "daily"):
            raise web.HTTPNotFound()
        built = await self._file(symbol, interval, period)
        if built is None:
            raise web.HTTPNotFound()
        body, digest_line = built
        if checksum:
            return web.Response(body=digest_line.encode("ascii"), content_type="text/plain")
        self.downloads[path] += 1
        return web.Response(body=body, content_type="application/zip")

    async def _file(self, symbol: str, interval: str, period: str) -> tuple[bytes, str] | None:
        key = (symbol, interval, period)
        if key in self._cache:
            return self._cache[key]
        source = self.market.sources.get(symbol)
        if source is None:
            return None
        try:
            length = self.market.check_interval(symbol, interval)
            start, end = period_bounds(period)
        except ValueError:
            return None
        now = self.market.now_ms
        today = now - now % DAY_MS
        if len(period) == 7:
            stamp = time.gmtime(now // 1000)
            available = end <= calendar.timegm((stamp.tm_year, stamp.tm_mon, 1, 0, 0, 0)) * 1000
        else:
            available = end <= today
        if not available or end <= source.first_open_ms:
            return None
        days = [_day(t) for t in range(start, end, DAY_MS)]
        plants = self.plants
        if any(d in plants.missing for d in days):
            return None
        foreign = any(d in plants.foreign for d in days)
        lo, hi = (start + DAY_MS, end + DAY_MS) if foreign else (start, end)
        spoilt = {
            day_ms for day_ms in range(start, end, DAY_MS) if _day(day_ms) in plants.incomplete
        }
        built = await asyncio.to_thread(
            self._build, source, length, lo, hi, f"{key[0]}-{key[1]}-{period}", spoilt
        )
        if built is None:
            return None
        body, digest = built
        if any(d in plants.corrupt for d in days):
            spoiled = bytearray(body)
            spoiled[len(spoiled) // 2] ^= 0xFF
            body = bytes(spoiled)
        result = (body, f"{digest}  {symbol}-{interval}-{period}.zip\n")
        self._cache[key] = result
        return result

    def _build(
        self, source: KlineSource, length: int, start: int, end: int, name: str,
        incomplete: set[int],
    ) -> tuple[bytes, str] | None:  # fmt: skip
        bars = source.aggregated(length, max(start, source.first_open_ms), end)
        if not bars:
            return None
        for day in incomplete:
            hole, after = day + 10 * HOUR_MS, day + 11 * HOUR_MS
            bars = [b if b.open_time != after else b._replace(volume=b.volume + 1)
                    for b in bars if not hole <= b.open_time < after]  # fmt: skip
        micros = self.folder == "spot" and start >= MICROSECONDS_FROM_MS
        csv = render_csv(bars, self.venue.name, micros)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr(f"{name}.csv", csv)
        body = buffer.getvalue()
        return body, hashlib.sha256(body).hexdigest()


def _day(ms: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ms // 1000))
