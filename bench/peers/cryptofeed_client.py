"""cryptofeed 2.4.1 as a peer in bench/end_to_end.py: Binance, CANDLES, 1m, BTC-USDT.

Keeps every closed candle and appends one CSV line per closed candle (close, high, low,
open, volume, quote volume, open time; the decimal strings as received — cryptofeed's
``Decimal`` of each keeps them — and the quote volume from the raw message). cryptofeed
is used as shipped (``FeedHandler.run``, its default uvloop, ``candle_closed_only``);
only its hard-coded Binance endpoints are pointed at the local blast server, and its
``wss://``-only check is bypassed for the server's plain ``ws://``.

Run with the peer venv's python (not a quantcore dependency):
    /tmp/peers/bin/python bench/peers/cryptofeed_client.py --ws URL --rest URL \
        --frames N --csv PATH
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import cryptofeed.feed  # type: ignore[import-untyped]
from _peer import Probe, open_csv, parse_args, stamp
from cryptofeed import FeedHandler  # type: ignore[import-untyped]
from cryptofeed.connection import (  # type: ignore[import-untyped]
    RestEndpoint,
    Routes,
    WebsocketEndpoint,
    WSAsyncConn,
)
from cryptofeed.defines import CANDLES  # type: ignore[import-untyped]
from cryptofeed.exchanges import Binance  # type: ignore[import-untyped]


class _PlainWebSocket(WSAsyncConn):  # type: ignore[misc]
    """cryptofeed refuses any address but ``wss://``; the blast server is ``ws://``."""

    def __init__(self, address: str, conn_id: str, **kwargs: Any) -> None:
        super().__init__(address.replace("ws://", "wss://", 1), conn_id, **kwargs)
        self.address = address


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    probe = Probe(args.frames)
    csv = open_csv(args.csv)
    bars: list[Any] = []

    class LocalBinance(Binance):  # type: ignore[misc]
        """Binance at the blast server; counts frames for the probe."""

        websocket_endpoints = [WebsocketEndpoint(args.ws.rstrip("/"))]
        rest_endpoints = [RestEndpoint(args.rest.rstrip("/"), routes=Routes("/v3/exchangeInfo"))]

        async def message_handler(self, msg: str, conn: Any, timestamp: float) -> None:
            if not probe.frames:
                probe.start()
            probe.frames += 1
            await Binance.message_handler(self, msg, conn, timestamp)

    async def candle(c: Any, receipt_timestamp: float) -> None:
        bars.append(c)
        k = c.raw["k"]
        csv.write(f"{c.close},{c.high},{c.low},{c.open},{c.volume},{k['q']},{stamp(k['t'])}\n")
        probe.bars += 1
        if probe.done:
            probe.finish()
            asyncio.get_running_loop().stop()

    cryptofeed.feed.WSAsyncConn = _PlainWebSocket
    handler = FeedHandler(config={"uvloop": True, "log": {"disabled": True}})
    handler.add_feed(
        LocalBinance(
            symbols=["BTC-USDT"],
            channels=[CANDLES],
            candle_interval="1m",
            callbacks={CANDLES: candle},
        )
    )
    loop = asyncio.new_event_loop()  # after FeedHandler(): its policy (uvloop) makes it
    asyncio.set_event_loop(loop)
    loop.call_later(args.timeout, loop.stop)
    handler.run()
    csv.close()
    probe.report()


if __name__ == "__main__":
    sys.exit(main())
