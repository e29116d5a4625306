"""`simulate` command: run a `LocalExchange` until Ctrl-C/SIGTERM (or the replay ends)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from pathlib import Path

from quantcore.feeds.binance.venues import SPOT
from quantcore.logs import configure_logging

from .formats import DataFileError
from .generator import RandomWalkSource
from .klines import interval_ms
from .realism import Realism
from .server import LocalExchange
from .sources import ReplaySource, sources_from_specs

log = logging.getLogger(__name__)

_SHOWN_STREAMS = 20


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Add the simulate options to `p` (used by `python -m quantcore simulate`)."""
    p.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: pick a free one)")
    p.add_argument(
        "--speed",
        default="max",
        help="market seconds per wall second, or 'max' to play as fast as clients read",
    )
    p.add_argument(
        "--data",
        nargs="+",
        action="extend",
        default=[],
        metavar="[SYMBOL=]FILE",
        help="replay Binance kline file(s); the symbol is read from the file if not given",
    )
    p.add_argument(
        "--symbols", default="", help="comma-separated symbols to generate (random walk)"
    )
    p.add_argument("--interval", default="", help="comma-separated kline intervals (default 1m)")
    p.add_argument("--seed", type=int, default=0, help="random-walk seed")
    p.add_argument(
        "--history-bars", type=int, default=0, help="replay bars already closed at start"
    )
    p.add_argument("--updates-per-bar", type=int, default=None, help="x:false updates per bar")
    p.add_argument("--exit-when-done", action="store_true", help="exit when every replay has ended")
    p.add_argument(
        "--realistic",
        action="store_true",
        help="be as unkind as Binance (Realism.binance(seed)): REST lags 3 s, x:true arrives "
        "70-430 ms late or never, quiet bars push nothing, 24 h connection lifetime, "
        "serverShutdown notices, 300 connection attempts/5 min, REST weight 6000/min "
        "(429 then 418 bans), URLs over 8000 chars refused, 5 incoming messages/s",
    )
    p.add_argument(
        "--lagging-rest",
        action="store_true",
        help="--realistic, with REST klines 70-120 s behind the stream (Realism.lagging_rest): "
        "recent bars are served still forming, the newest not at all",
    )
    p.add_argument(
        "--exchange-info",
        default=None,
        metavar="FILE",
        help="serve this real exchangeInfo JSON (played symbols TRADING) instead of a minimal one",
    )


def playing(exchange: LocalExchange) -> list[str]:
    """What the exchange plays, one line per symbol, then its speed and market clock."""
    lines = []
    for symbol, source in exchange.market.sources.items():
        if isinstance(source, ReplaySource):
            last = (source.end_ms - source.interval_ms) // 1000
            what = (
                f"replaying {len(source)} {source.interval} bars, "
                f"{_utc(source.first_open_ms // 1000)} .. {_utc(last)}"
            )
        elif isinstance(source, RandomWalkSource):
            what = f"seeded random walk (seed {source.seed}), {source.interval} base"
        else:
            what = type(source).__name__
        lines.append(f"playing {symbol}: {what}")
    speed = exchange.market.speed
    pace = "as fast as clients read" if speed is None else f"speed {speed:g}x"
    lines.append(f"{pace}, market clock at {_utc(exchange.now_ms // 1000)}")
    return lines


def _utc(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(seconds))


def _speed(text: str) -> float | None:
    if text.lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise ValueError(f"invalid --speed {text!r}: expected a positive number or 'max'")
    return value


def _exchange(args: argparse.Namespace) -> LocalExchange:
    """Build the exchange from parsed options; ValueError names the bad option."""
    speed = _speed(str(args.speed))
    intervals = [i.strip() for i in str(args.interval).split(",") if i.strip()]
    for interval in intervals:
        interval_ms(interval)
    symbols = [s.strip().upper() for s in str(args.symbols).split(",") if s.strip()]
    for symbol in symbols:
        if not SPOT.check_symbol(symbol):
            raise ValueError(
                f"invalid symbol {symbol!r}: expected letters and digits, e.g. BTCUSDT"
            )
    if args.port < 0 or args.port > 65535:
        raise ValueError(f"invalid --port {args.port}")
    info = Path(args.exchange_info) if args.exchange_info else None
    if info is not None and not info.is_file():
        raise ValueError(f"--exchange-info {info}: no such file")
    realism = (
        Realism.lagging_rest(args.seed, exchange_info=info)
        if args.lagging_rest
        else Realism.binance(args.seed, exchange_info=info)
        if args.realistic
        else (Realism(exchange_info=info) if info is not None else None)
    )
    return LocalExchange(
        sources_from_specs(list(args.data)),
        symbols=symbols,
        intervals=intervals or None,
        seed=args.seed,
        speed=speed,
        history_bars=args.history_bars,
        updates_per_bar=args.updates_per_bar,
        port=args.port,
        realism=realism,
    )


async def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM (exit 0) or, with --exit-when-done, the replay's end.

    Bad input prints one line naming the problem and returns 2.
    """
    if not logging.getLogger().handlers:
        configure_logging("INFO")
    try:
        exchange = _exchange(args)
        await exchange.start()
    except (DataFileError, ValueError, OSError) as exc:
        print(f"simulate: error: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    try:
        for sig in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        streams = exchange.streams
        shown = ",".join(streams[:_SHOWN_STREAMS])
        if len(streams) > _SHOWN_STREAMS:
            shown += f",...({len(streams)} streams)"
        print(
            f"local exchange: ws={exchange.ws_url} rest={exchange.rest_url} streams={shown}",
            flush=True,
        )
        for line in playing(exchange):
            log.info("%s", line)
        waits = [asyncio.create_task(stop.wait(), name="quantcore.sim.cli.stop")]
        if args.exit_when_done:
            waits.append(
                asyncio.create_task(exchange.finished.wait(), name="quantcore.sim.cli.done")
            )
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
            await asyncio.gather(*waits, return_exceptions=True)
    finally:
        for sig in signals:
            with contextlib.suppress(ValueError, RuntimeError):
                loop.remove_signal_handler(sig)
        await exchange.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m quantcore.sim`."""
    parser = argparse.ArgumentParser(
        prog="python -m quantcore.sim", description="Run a local Binance-compatible exchange."
    )
    configure_parser(parser)
    return asyncio.run(run(parser.parse_args(argv)))
