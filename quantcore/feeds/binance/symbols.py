"""The symbol check: Binance sends nothing for an unknown stream, so without it a typo in a
symbol would look like a healthy, quiet feed; a symbol not TRADING is not waited for."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from quantcore.feeds.binance.rest import BackfillError, BinanceRest

log = logging.getLogger(__name__)

EXCHANGE_INFO_SYMBOLS = 100
"""Up to this many symbols are asked for by name; more, and the full list is cheaper."""


class UnknownSymbolError(RuntimeError):
    """The exchange does not list a configured symbol; retrying cannot help."""


class SymbolCheck:
    """Asks ``exchangeInfo`` about ``symbols`` once per run (the first caller does, the
    others wait for it)."""

    def __init__(self, rest: BinanceRest, symbols: Iterable[str], name: str) -> None:
        self.rest = rest
        self.symbols = sorted(set(symbols))
        self.name = name
        self.done = False
        self._lock = asyncio.Lock()

    async def run(self) -> set[str]:
        """The symbols that are not TRADING (warned about; empty after the first call);
        UnknownSymbolError if one is not listed, BackfillError if REST failed."""
        async with self._lock:
            if self.done:
                return set()
            venue, configured = self.rest.venue, self.symbols
            by_name = venue.exchange_info_by_symbols and len(configured) <= EXCHANGE_INFO_SYMBOLS
            try:
                info = await self.rest.exchange_info(configured if by_name else None)
            except BackfillError as exc:
                if "-1121" not in str(exc):
                    raise
                info = await self.rest.exchange_info()  # -1121 names no symbol: see which
            field = venue.status_field
            listed = {entry["symbol"]: entry.get(field) for entry in info.get("symbols", [])}
            unknown = [symbol for symbol in configured if symbol not in listed]
            if unknown:
                source = venue.endpoint(self.rest.rest_url, "exchangeInfo")
                raise UnknownSymbolError(
                    f"unknown symbol {', '.join(unknown)}: not listed by {source}"
                )
            halted = {symbol for symbol in configured if listed[symbol] != "TRADING"}
            for symbol in sorted(halted):
                log.warning("%s: %s is %s, not TRADING: no bars", self.name, symbol, listed[symbol])
            self.done = True
            return halted
