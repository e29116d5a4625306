"""Fault injection: a real exchange's misbehaviours, provoked on demand by tests, as the very
frames and disconnects a client would see from Binance."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import orjson

from quantcore.feeds.binance.codec import stream_name

from .klines import Bar, bucket_start, interval_ms
from .market import Market
from .ws_hub import WsEndpoint

ERROR_PAYLOAD = (
    '{"error":{"code":2,"msg":"Invalid request: missing field `method` at line 1 column 2"},'
    '"id":null}'
)
"""What Binance's stream server answers to a JSON message without `method`."""

MalformedKind = Literal["not_json", "missing_fields", "wrong_types"]


class FaultInjection:
    """Faults on the connections of `_ws` with frames of `market`: a base of `LocalExchange`,
    which sets both."""

    market: Market
    _ws: WsEndpoint

    async def drop_connections(self) -> int:
        """Abort every WebSocket connection abruptly (TCP reset, no close frame).

        python-binance then queues `{"e":"error","type":"ConnectionClosedError",...}` and
        reconnects by itself after 1-2 s. Returns how many connections were dropped.
        """
        count = self._ws.hub.abort_all()
        await asyncio.sleep(0)
        return count

    def stall(self, seconds: float) -> None:
        """Send no market frames for `seconds` while connections stay open and pings are
        answered. The clock keeps running: bars closing meanwhile are never pushed and must
        be recovered over REST. (At speed=None the playback races on unseen meanwhile.)"""
        self._ws.hub.stall_until = time.monotonic() + seconds

    async def send_malformed(self, kind: MalformedKind) -> int:
        """Send one malformed kline frame per subscribed stream to every subscriber.

        `not_json`: the first half of a real frame; `missing_fields`: a kline event without
        `E`, `k.c` and `k.x`; `wrong_types`: numbers as strings and vice versa (`E`, `k.t`,
        `k.n` strings, `k.o` a float, `k.x` "true"). Combined connections get the usual
        wrapper. Returns the number of frames sent.
        """
        if kind not in ("not_json", "missing_fields", "wrong_types"):
            raise ValueError(f"unknown malformed kind {kind!r}")
        hub = self._ws.hub
        sent = 0
        for client in list(hub.clients):
            for name in list(client.streams):
                stream = self.market.streams.get(name)
                if stream is None:
                    continue
                good = self._last_closed(stream.symbol, stream.interval, 0)[1]
                if kind == "not_json":
                    text = client.wrap(name, good)
                    text = text[: len(text) // 2]
                else:
                    text = client.wrap(name, _malform(kind, good))
                sent += await hub.send(client, text)
        return sent

    async def send_duplicate_closed(self, symbol: str, interval: str) -> str:
        """Re-send the latest closed bar's `x:true` frame (identical text) to the stream's
        subscribers; returns the raw payload."""
        return await self.send_out_of_order_closed(symbol, interval, 0)

    async def send_out_of_order_closed(self, symbol: str, interval: str, bars_back: int = 2) -> str:
        """Re-send the `x:true` frame of the closed bar `bars_back` before the latest one
        (stale data arriving late); returns the raw payload."""
        name, payload = self._last_closed(symbol.upper(), interval, bars_back)
        await self._ws.hub.publish(name, payload)
        return payload

    async def send_error_payload(self) -> int:
        """Send every connection Binance's error reply `ERROR_PAYLOAD` (never wrapped, like
        Binance's method responses). Returns the number of frames sent."""
        hub = self._ws.hub
        sent = 0
        for client in list(hub.clients):
            sent += await hub.send(client, ERROR_PAYLOAD)
        return sent

    async def server_shutdown(self, lead: float | None = None) -> int:
        """Send Binance's serverShutdown notice to every connection now, then close each
        (code 1001) after `lead` wall s (default `realism.shutdown_lead`) in the background.
        Returns the number of connections notified."""
        ws = self._ws
        wait = self.market.realism.shutdown_lead if lead is None else lead
        clients = [c for c in ws.hub.clients if not c.retiring]
        for client in clients:
            client.retiring = True
            await ws.announce_shutdown(client)
        for client in clients:
            ws.spawn(ws.close_going_away(client, wait), "quantcore.sim.shutdown")
        return len(clients)

    def _last_closed(self, symbol: str, interval: str, bars_back: int) -> tuple[str, str]:
        name = stream_name(symbol, interval)
        if name not in self.market.streams:
            raise KeyError(f"{name} is not played by this exchange")
        end = bucket_start(self.market.now_ms, interval_ms(interval)) - 1
        bars: list[Bar] = self.market.rest_klines(symbol, interval, None, end, bars_back + 1)
        if len(bars) <= bars_back:
            raise LookupError(f"{name}: fewer than {bars_back + 1} closed bars")
        return name, self.market.closed_frame(symbol, interval, bars[-1 - bars_back])


def _malform(kind: MalformedKind, good: str) -> str:
    """The raw kline event `good` with fields missing or of the wrong types."""
    event: dict[str, Any] = orjson.loads(good)
    k = event["k"]
    if kind == "missing_fields":
        del event["E"], k["c"], k["x"]
    else:
        event["E"], k["t"], k["n"] = str(event["E"]), str(k["t"]), str(k["n"])
        k["o"], k["x"] = float(k["o"]), "true"
    return orjson.dumps(event).decode()
