"""Replay from PostgreSQL: the same bars and signals as from the CSV the same run wrote,
with the trades, taker volumes and event times only the database keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from quantcore.app import App
from quantcore.config import parse_config
from quantcore.replay.feed import replay_config
from quantcore.replay.settings import ReplaySettings
from quantcore.sim import LocalExchange, ReplaySource
from tests.paths import CSV_BTC
from tests.sinks.servers import PostgresServer
from tests.test_replay import Collector


async def test_postgres_replay_equals_csv_replay(
    tmp_path: Path, postgres_server: PostgresServer, unique: str
) -> None:
    table = f"bars_{unique}"
    raw: dict[str, Any] = {
        "streams": [{"symbol": "BTCUSDT", "interval": "1m"}],
        "consumers": [
            {"class": "csv", "params": {"path": str(tmp_path / "{symbol}_{interval}.csv")}},
            {"class": "postgres", "params": {"dsn": postgres_server.dsn, "table": table}},
            {"class": "strategies.sma_cross:SmaCross", "params": {"fast": 5, "slow": 20}},
        ],
    }
    exchange = LocalExchange([ReplaySource.from_file(CSV_BTC)], history_bars=400, speed=60)
    async with exchange:
        live = {**raw, "exchange": {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url}}
        live["feed"] = {"warmup_bars": 300, "stall_timeout": 2}
        await App(parse_config(live)).run(max_bars=300)

    async def replay(**settings: Any) -> Collector:
        collector = Collector()
        config = replay_config(parse_config(raw), ReplaySettings(**settings))
        await App(config, [collector]).run()
        return collector

    from_csv = await replay(source="csv")
    from_pg = await replay(source="postgres")
    assert len(from_pg.bars) == len(from_csv.bars) == 300
    for a, b in zip(from_csv.bars, from_pg.bars, strict=True):
        assert (a.open_time, a.close_time, a.close, a.replayed) == (
            b.open_time, b.close_time, b.close, b.replayed
        )  # fmt: skip
        da, db = a.decimal_strings(), b.decimal_strings()
        assert (da.open, da.high, da.low, da.close, da.volume, da.quote_volume) == (
            db.open, db.high, db.low, db.close, db.volume, db.quote_volume
        )  # fmt: skip
    assert any(b.trades > 0 for b in from_pg.bars), "the database's trade counts are missing"
    assert all(b.trades == 0 for b in from_csv.bars)
    assert from_pg.signals == from_csv.signals and from_pg.signals
