"""Reading Binance's public kline archive (data.binance.vision): download, verify, parse.

Layout (binance-public-data README): ``{base}/data/{spot|futures/um|futures/cm}/
{daily|monthly}/klines/{SYMBOL}/{interval}/{SYMBOL}-{interval}-{YYYY-MM-DD|YYYY-MM}.zip``
beside ``….zip.CHECKSUM`` (``sha256sum`` output). Every zip is checked against its
CHECKSUM before a row is used; a verified zip is kept in the cache folder (written under a
temporary name, then renamed) and never downloaded again.

Rows are REST's twelve columns. Times are milliseconds or (spot from 2025-01-01 on)
microseconds, decided per file from the first row and required of every row; a header row
may be present (futures) or not (older spot). Every row must open inside the file's own
day or month, on the interval's grid, after the row before, else the file is refused as
corrupt. Prices and volumes are kept as the exact strings the archive holds: Binance
documents the archive as "obtained from" the klines endpoint (spot) and "same as"
``/fapi``/``/dapi`` klines (futures), and its examples show REST's strings (spot's eight
decimals, futures' symbol precision), so they are what live recording writes; where an
archive string differs from what REST serves for the same bar, REST wins (counted by the
caller).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from quantcore.events import BarDecimals, BarEvent, from_epoch_ms, utc_text
from quantcore.feeds.binance.venues import Venue
from quantcore.intervals import INTERVAL_MS, bar_open_ms

log = logging.getLogger(__name__)

MARKETS = {"binance-spot": "spot", "binance-usdm": "futures/um", "binance-coinm": "futures/cm"}
"""Venue name → the archive's market folder."""
ATTEMPTS = 3
"""Downloads of one file (a mismatch or an unreadable zip is retried) before REST is used."""
_SPANS = {name: ms - 1 for name, ms in INTERVAL_MS.items() if ms}
"""close - open of each fixed-length interval (a calendar month has none)."""
_MICROS = 10**14
"""An open time this large is in microseconds (10**14 ms is the year 5138)."""


class ArchiveCorrupt(ValueError):
    """A file that failed its CHECKSUM, is no readable zip, or holds rows not its own."""


@dataclass(frozen=True, slots=True)
class ArchiveFile:
    """One verified archive file's rows, in order, and its size in bytes."""

    bars: list[BarEvent]
    size: int
    downloaded: bool
    """False: read from the cache folder."""


def file_path(venue: Venue, symbol: str, interval: str, period: str) -> str:
    """The file's path under the base URL (and under the cache folder)."""
    kind = "daily" if len(period) == 10 else "monthly"
    market = MARKETS.get(venue.name, "spot")
    name = f"{symbol}-{interval}-{period}.zip"
    return f"data/{market}/{kind}/klines/{symbol}/{interval}/{name}"


_NOT_PLAIN = re.compile(r"[^0-9.,\n]")
"""Anything but digits, points, commas and newlines: a sign, an exponent, a space, text."""
_F = float
_ROWS_12 = msgspec.json.Decoder(list[tuple[int, _F, _F, _F, _F, _F, int, _F, int, _F, _F, _F]])
_ROWS_11 = msgspec.json.Decoder(list[tuple[int, _F, _F, _F, _F, _F, int, _F, int, _F, _F]])
"""The rows' numbers typed at C speed (times and trades must be integers), once every
character is known to be plain; rows of 12 columns (Binance's) or 11 (no ``ignore``)."""


def parse_rows(
    data: bytes, symbol: str, interval: str, start_ms: int, end_ms: int
) -> list[BarEvent]:
    """The bars of one archive zip (closed, the strings verbatim), all opening in
    ``[start_ms, end_ms)``, in order, on the interval's grid, in one time unit, each a
    consistent kline (low <= open, close <= high); else :class:`ArchiveCorrupt`.

    Built as the live codec builds a REST row's bar (event time = close time), from one
    regular expression over the whole file rather than per-row parsing: a year of 1m
    bars is 525,600 rows.
    """
    text = _unzip(data).replace("\r", "")
    body = text[text.find("\n") + 1 :] if text[:1].isalpha() else text
    body = body.rstrip("\n")
    if not body:
        return []
    odd = _NOT_PLAIN.search(body)
    if odd is not None:
        line = body[body.rfind("\n", 0, odd.start()) + 1 :].split("\n", 1)[0]
        raise ArchiveCorrupt(f"not a kline row: {line[:80]!r}")
    text = "[[" + body.replace("\n", "],[") + "]]"
    try:
        numbers: list[tuple[Any, ...]] = list(_ROWS_12.decode(text))
        width = 12
    except msgspec.DecodeError:
        try:
            numbers, width = list(_ROWS_11.decode(text)), 11
        except msgspec.DecodeError as exc:
            raise ArchiveCorrupt(f"not kline rows of 12 columns: {exc}") from None
    fields = body.replace("\n", ",").split(",")
    span = _SPANS.get(interval, 0)
    grid = span + 1 if span and interval != "1w" else 0
    scale = 1000 if numbers[0][0] >= _MICROS else 1
    bars: list[BarEvent] = []
    append = bars.append
    last = start_ms - 1
    open_time = datetime.fromtimestamp(0, UTC)
    step = timedelta(milliseconds=INTERVAL_MS.get(interval) or 0)
    length = timedelta(milliseconds=span)
    for number, row in enumerate(numbers, start=1):
        opened, fo, fh, fl, fc, fv, closed, fq, n, ftv, ftq = row[:11]
        if scale == 1000:
            if opened < _MICROS or opened % 1000 or closed % 1000 != 999:
                raise ArchiveCorrupt(f"row {number}: {opened},{closed} are not whole-ms µs")
            opened, closed = opened // 1000, closed // 1000
        elif opened >= _MICROS:
            raise ArchiveCorrupt(f"row {number}: milliseconds and microseconds mixed")
        if not start_ms <= opened < end_ms or opened <= last:
            raise ArchiveCorrupt(f"row {number}: opens at {utc_text(opened)}, not after the "
                                 "row before inside the file's own period")  # fmt: skip
        if grid:
            if closed != opened + span or opened % grid:
                raise ArchiveCorrupt(f"row {number}: {opened}..{closed} is no {interval} bar")
        elif bar_open_ms(opened, interval) != opened or closed <= opened:
            raise ArchiveCorrupt(f"row {number}: {opened}..{closed} is no {interval} bar")
        if not (fl <= fo <= fh and fl <= fc <= fh):
            raise ArchiveCorrupt(f"row {number}: inconsistent bar o={fo} h={fh} l={fl} c={fc}")
        if opened - last == grid and grid and number > 1:
            open_time += step
        else:
            open_time = from_epoch_ms(opened)
        last = opened
        close_time = open_time + length if span else from_epoch_ms(closed)
        at = (number - 1) * width
        _, o, h, lo, c, v, _, q, _, tv, tq = fields[at : at + 11]
        decimals = BarDecimals(o, h, lo, c, v, q, tv, tq)
        append(BarEvent(symbol, interval, open_time, close_time, fo, fh, fl, fc, fv, fq, n,
                        ftv, ftq, True, close_time, 0, decimals))  # fmt: skip
    return bars


def _unzip(data: bytes) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if len(names) != 1:
                raise ArchiveCorrupt(f"{len(names)} members, expected one CSV")
            return archive.read(names[0]).decode("ascii")
    except ArchiveCorrupt:
        raise
    except (zipfile.BadZipFile, UnicodeDecodeError, OSError, EOFError, ValueError) as exc:
        raise ArchiveCorrupt(f"unreadable zip: {exc}") from None


class ArchiveReader:
    """Downloads (or takes from ``cache``; None: keeps nothing) one venue's archive files,
    verified."""

    def __init__(
        self, session: aiohttp.ClientSession, base_url: str, venue: Venue, cache: Path | None
    ) -> None:
        self.session = session
        self.base_url = base_url.rstrip("/")
        self.venue = venue
        self.cache = cache
        self.bytes_downloaded = 0
        self.downloads = 0
        self.unreachable: BaseException | None = None
        """Why the archive could not be reached (the caller then stops asking it)."""

    async def read(self, symbol: str, interval: str, period: str, start_ms: int, end_ms: int
                   ) -> ArchiveFile | None:  # fmt: skip
        """The verified rows of one file; None when the archive has no such file (404).
        Raises :class:`ArchiveCorrupt` after ``ATTEMPTS`` bad downloads, or OSError /
        aiohttp.ClientError when the archive cannot be reached."""
        path = file_path(self.venue, symbol, interval, period)
        cached = None if self.cache is None else self.cache / path
        if cached is not None and cached.exists():
            data = await asyncio.to_thread(cached.read_bytes)
            try:
                digest = _digest(cached.with_name(cached.name + ".CHECKSUM").read_bytes())
                if digest != hashlib.sha256(data).hexdigest():
                    raise ArchiveCorrupt("SHA-256 differs from its CHECKSUM")
                bars = await asyncio.to_thread(parse_rows, data, symbol, interval, start_ms, end_ms)
                return ArchiveFile(bars, len(data), downloaded=False)
            except (ArchiveCorrupt, OSError) as exc:
                log.warning("%s: cached copy refused (%s); downloading it again", cached, exc)
        problem = ""
        for _attempt in range(ATTEMPTS):
            checksum = await self._get(f"{path}.CHECKSUM")
            payload = await self._get(path) if checksum is not None else None
            if checksum is None or payload is None:
                return None
            self.downloads += 1
            self.bytes_downloaded += len(payload)
            if _digest(checksum) != hashlib.sha256(payload).hexdigest():
                problem = "SHA-256 differs from its CHECKSUM"
                continue
            try:
                bars = await asyncio.to_thread(
                    parse_rows, payload, symbol, interval, start_ms, end_ms
                )
            except ArchiveCorrupt as exc:
                problem = str(exc)
                continue
            if cached is not None:
                await asyncio.to_thread(_keep, cached, payload, checksum)
            return ArchiveFile(bars, len(payload), downloaded=True)
        raise ArchiveCorrupt(f"{path}: {problem} ({ATTEMPTS} downloads)")

    async def _get(self, path: str) -> bytes | None:
        async with self.session.get(f"{self.base_url}/{path}") as response:
            if response.status in (403, 404):  # S3 answers 403 for a key it does not have
                return None
            response.raise_for_status()
            return await response.read()


def _digest(checksum: bytes) -> str:
    """The hex SHA-256 of a CHECKSUM file (``sha256sum`` output: ``<hex>  <name>``)."""
    words = checksum.decode("ascii", "replace").split()
    return words[0].lower() if words else ""


def _keep(path: Path, data: bytes, checksum: bytes) -> None:
    """Keep a verified zip and its CHECKSUM in the cache, each written under a temporary
    name and renamed (a kill leaves no partial file; the zip lands last)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for target, content in ((path.with_name(path.name + ".CHECKSUM"), checksum), (path, data)):
        temporary = target.with_name(f".{target.name}.{os.getpid()}.part")
        temporary.write_bytes(content)
        os.replace(temporary, target)
