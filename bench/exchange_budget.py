"""Exchange budget: REST weight and connection attempts a run spends, per reconnect and per day.

The local exchange runs its realistic profile in-process (REST lag 3 s, ``x:true`` 70-430 ms
late and 1 % never, connections closed after a compressed lifetime with ``serverShutdown``
half the time). Phase 1 runs quietly and extrapolates to a day of exchange time; phase 2
drops every connection a few times and measures what each reconnect costs. Baseline in the
same run: the kind exchange (no lag, every ``x:true`` sent), where a reconnect is the only
reason to call REST at all.

Run: python bench/exchange_budget.py [--symbols N] [--speed X] [--seconds S] [--drops K]
"""

from __future__ import annotations

import asyncio
import tempfile
from dataclasses import dataclass

from _common import Reporter, load_average, parser, run_main, symbols

from quantcore.app import App
from quantcore.config import parse_config
from quantcore.feeds.binance.feed import BinanceKlineFeed
from quantcore.sim import LocalExchange, Realism

DAY_MS = 86_400_000


@dataclass(slots=True)
class Spend:
    weight: int
    calls: int
    attempts: int
    market_ms: int
    handovers: int
    backfilled: int


async def measure(
    names: list[str], speed: float, seconds: float, drops: int, realism: Realism
) -> tuple[Spend, Spend, int]:
    """(steady phase, drop phase, exchange 429/418 count) for one exchange profile.

    The feed hands over at 80 % of the connection lifetime, as it does at 23.5 of
    Binance's 24 hours."""
    lifetime = realism.connection_lifetime or 86_400.0
    async with LocalExchange(symbols=names, speed=speed, realism=realism) as exchange:
        with tempfile.TemporaryDirectory(prefix="qc-budget-") as tmp:
            config = parse_config(
                {
                    "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url},
                    "streams": [{"symbol": name, "interval": "1m"} for name in names],
                    "feed": {"max_connection_age": lifetime * 0.8},
                    "consumers": [{"class": "csv", "params": {"path": f"{tmp}/{{symbol}}.csv"}}],
                    "logging": {"level": "WARNING"},
                }
            )
            app = App(config)
            run = asyncio.create_task(app.run())
            await asyncio.sleep(seconds / 4)
            feed = app.feed
            assert isinstance(feed, BinanceKlineFeed)

            def snapshot() -> Spend:
                stats = feed.stats
                return Spend(
                    feed.rest_budget.spent, stats.rest_calls, exchange.limits.ws_attempts,
                    exchange.now_ms, stats.handovers, stats.backfilled,
                )  # fmt: skip

            start = snapshot()
            await asyncio.sleep(seconds)
            middle = snapshot()
            for _ in range(drops):
                await exchange.drop_connections()
                await asyncio.sleep(seconds / max(1, drops))
            end = snapshot()
            app.stop()
            await run
            refused = exchange.limits.rest_429 + exchange.limits.rest_418
            refused += exchange.limits.ws_refused_429 + exchange.limits.ws_refused_418
    return _minus(middle, start), _minus(end, middle), refused


def _minus(a: Spend, b: Spend) -> Spend:
    return Spend(
        a.weight - b.weight, a.calls - b.calls, a.attempts - b.attempts,
        a.market_ms - b.market_ms, a.handovers - b.handovers, a.backfilled - b.backfilled,
    )  # fmt: skip


async def main_async() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=40)
    p.add_argument("--speed", type=float, default=60.0, help="market seconds per wall second")
    p.add_argument("--seconds", type=float, default=20.0, help="wall seconds per phase")
    p.add_argument("--drops", type=int, default=4)
    p.add_argument("--lifetime", type=float, default=6.0, help="connection lifetime, wall s")
    args = p.parse_args()
    out = Reporter("exchange_budget", args.results)
    names = symbols(args.symbols)
    real = Realism.binance(seed=3, connection_lifetime=args.lifetime, shutdown_lead=1.0)
    kind = Realism()
    runs = {
        "realistic": await measure(names, args.speed, args.seconds, args.drops, real),
        "kind": await measure(names, args.speed, args.seconds, args.drops, kind),
    }
    out.note(
        f"{args.symbols} symbols x 1m at speed {args.speed:g}, {args.seconds:g} s per phase, "
        f"{args.drops} drops, connection lifetime {args.lifetime:g} s wall; "
        f"load {load_average()}"
    )
    (steady, dropped, refused), (k_steady, k_dropped, _) = runs["realistic"], runs["kind"]
    per_day = steady.weight * DAY_MS / steady.market_ms
    k_per_day = k_steady.weight * DAY_MS / k_steady.market_ms
    out.add(
        "REST weight per day of exchange time, steady",
        f"{per_day:,.0f} ({per_day / args.symbols:,.1f} per stream; {steady.calls} calls, "
        f"{steady.backfilled} bars settled over REST in {steady.market_ms / 60_000:,.0f} min)",
        baseline=f"kind exchange {k_per_day:,.0f}",
        target="far below 6,000 per minute",
        met=per_day / 1440 < 600,
    )
    per_drop = (dropped.weight - steady.weight * dropped.market_ms / steady.market_ms) / max(
        1, args.drops
    )
    k_per_drop = (
        k_dropped.weight - k_steady.weight * k_dropped.market_ms / max(1, k_steady.market_ms)
    ) / max(1, args.drops)
    out.add(
        "REST weight per reconnect",
        f"{per_drop:,.1f} ({per_drop / args.symbols:.2f} per stream)",
        baseline=f"kind exchange {k_per_drop:,.1f}",
    )
    out.add(
        "connection attempts, steady",
        f"{steady.attempts} in {args.seconds:g} s wall, {steady.handovers} of them handovers "
        f"(lifetime or serverShutdown, no REST): against Binance's 24 h lifetime that is "
        f"one attempt per connection per 23.5 h",
        target="<= 300 per 5 min",
        met=steady.attempts * 300 / args.seconds <= 300,
    )
    out.add(
        "connection attempts per reconnect",
        f"{(dropped.attempts - dropped.handovers) / max(1, args.drops):.1f}",
    )
    out.add("429/418 answers", str(refused), target="0", met=refused == 0)
    out.save()


if __name__ == "__main__":
    run_main(main_async)
