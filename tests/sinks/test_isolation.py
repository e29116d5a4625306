"""A sink whose server is down never stops, slows or fails the other consumers."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from quantcore.bus import EventBus
from quantcore.config import ConfigError, ConsumerSpec, import_component
from quantcore.consumers.csv_recorder import CsvRecorder
from quantcore.consumers.history import HistoryStore
from quantcore.events import FeedState
from quantcore.sinks.postgres import PostgresRecorder
from quantcore.sinks.redis_streams import RedisStreamPublisher
from quantcore.sinks.sqlite import SqliteRecorder
from tests.sinks.helpers import STREAM, StatusLog, make_bar, publish, start_all, stop_all
from tests.sinks.test_sqlite import count_rows


async def test_failing_sinks_never_stop_other_consumers(tmp_path: Path, dead_port: int) -> None:
    bus = EventBus()
    status = StatusLog(bus)
    history = HistoryStore()
    csv = CsvRecorder(path=str(tmp_path / "{symbol}_{interval}.csv"))
    sqlite = SqliteRecorder(path=str(tmp_path / "bars.sqlite"), batch_size=50)
    postgres = PostgresRecorder(
        dsn=f"postgresql://postgres@127.0.0.1:{dead_port}/postgres",
        batch_size=50,
        retry_max=0.1,
        stop_timeout=0.2,
        max_buffer=600,
    )
    redis = RedisStreamPublisher(
        url=f"redis://127.0.0.1:{dead_port}/0", retry_max=0.1, stop_timeout=0.2, max_buffer=600
    )
    components = [history, postgres, csv, redis, sqlite]
    await start_all(bus, components)
    assert postgres.resume_point(*STREAM) is None and redis.resume_point(*STREAM) is None

    started = time.monotonic()
    publish(bus, [make_bar(i) for i in range(1000)])
    assert time.monotonic() - started < 2.0, "queuing for a dead server must not block the bus"
    await stop_all(bus, components)

    assert sum(bus.handler_errors.values()) == 0
    assert history.count(*STREAM) == 1000
    assert count_rows(tmp_path / "bars.sqlite") == 1000
    assert len((tmp_path / "BTCUSDT_1m.csv").read_text().splitlines()) == 1001
    for sink in (postgres, redis):
        states = status.states(sink.name)
        assert states[0] is FeedState.ERROR, f"{sink.name} says it is down at start"
        spilled = [
            e.detail for e in status.events if e.feed == sink.name and "spilling" in e.detail
        ]
        assert len(spilled) == 1, f"{sink.name} says it spilled its backlog to the journal"
        assert FeedState.DROPPED not in states, "nothing is dropped: memory, then the journal"
        assert sink.buffer.dropped == 0 and sink.buffer.written == 0
        assert sink.unrecorded() == 1000, "what never reached the server counts (exit 3)"
        assert not sink.journal_path().exists(), "the journal goes with the stop"
    assert status.events[-1].state is FeedState.ERROR
    assert "never written" in status.events[-1].detail


@pytest.mark.parametrize(
    ("target", "params"),
    [
        ("quantcore.sinks.sqlite:SqliteRecorder", {"path": "x.sqlite", "batch_size": 10}),
        ("quantcore.sinks.postgres:PostgresRecorder", {"dsn": "postgresql://u@h/db", "table": "t"}),
        ("quantcore.sinks.redis_streams:RedisStreamPublisher", {"partials": True, "maxlen": 10}),
    ],
)
def test_sinks_build_from_yaml_params(target: str, params: dict[str, object]) -> None:
    cls = import_component(target, "consumers[0].class")
    component = ConsumerSpec(cls, params, "consumers[0]").build()
    assert component.name == cls.__name__


def test_bad_params_are_config_errors() -> None:
    cls = import_component("quantcore.sinks.postgres:PostgresRecorder", "consumers[0].class")
    with pytest.raises(ConfigError, match=r"consumers\[0\]\.params: table 'a;drop'"):
        ConsumerSpec(cls, {"dsn": "postgresql://", "table": "a;drop"}, "consumers[0]").build()
    with pytest.raises(ConfigError, match="max_buffer"):
        ConsumerSpec(cls, {"dsn": "x", "batch_size": 10, "max_buffer": 5}, "consumers[0]").build()
