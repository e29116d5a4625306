"""A stop that lands while a handover closes the old connection stops the new one too.

The handover opens the new socket and starts its pump before closing the old one; a stop
arriving during that close once left the new pump running after ``run`` returned, so
bars went on reaching the recorders while they stopped (the CSV kept one the Parquet
store, stopping first, had lost) and after (the CSV reopened and appended).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from quantcore.app import App
from quantcore.feeds.binance import supervisor
from quantcore.feeds.binance.supervisor import Link
from quantcore.sim import LocalExchange
from tests import parquet_check
from tests.harness import app_config, csv_rows, truth_since
from tests.paths import CSV_BTC, replay


@pytest.mark.timeout(60)
async def test_a_stop_while_a_handover_closes_the_old_socket_leaves_nothing_pumping(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The App is stopped at the moment the first handover starts closing the old link;
    after ``run`` returns no pump runs, the CSV gets no further row while the exchange
    goes on closing bars, and the Parquet store holds exactly the CSV's rows."""
    close_link = supervisor.close_link
    stopped_in_handover: list[Link] = []
    app: App | None = None

    def pumps() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name().endswith(":pump")]

    async def stop_then_close(link: Link) -> None:
        """Stop the App as the first handover closes its old link (the new one pumping)."""
        handing_over = any(task is not link.pump for task in pumps())
        if app is not None and handing_over and not stopped_in_handover:
            stopped_in_handover.append(link)
            app.stop()
        await close_link(link)

    monkeypatch.setattr(supervisor, "close_link", stop_then_close)
    template = str(tmp_path / "{symbol}_{interval}.csv")
    async with LocalExchange([replay(CSV_BTC)], speed=600, updates_per_bar=4) as exchange:
        feed = {"transport": transport, "stall_timeout": 2, "max_connection_age": 0.5}
        consumers = [
            {"class": "csv", "params": {"path": template}},
            parquet_check.consumer(tmp_path / "store"),
        ]
        app = App(app_config(exchange, template, feed=feed, consumers=consumers))
        await asyncio.wait_for(app.run(), 30)
        assert stopped_in_handover, "no handover was stopped while closing its old link"
        assert app.feed is not None and app.feed.stats.handovers == 0
        running = pumps()
        rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
        closed = len(exchange.closed_klines("BTCUSDT", "1m"))
        while len(exchange.closed_klines("BTCUSDT", "1m")) < closed + 5:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        after = csv_rows(tmp_path / "BTCUSDT_1m.csv")
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        assert after == rows, f"{len(after) - len(rows)} rows appended after the stop"
        assert rows and rows == truth_since(exchange, rows[0], len(rows))
        parquet_check.assert_store_holds(tmp_path / "store", "BTCUSDT", rows, exchange)
        assert not running, f"{len(running)} pump(s) still running after the feed stopped"
