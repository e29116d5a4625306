"""``quantcore check postgresql://…``: a PostgresRecorder table gets the SQLite file's report.

The same bars (a hole of two, an exchange gap of three written down by the recorder) go
to a SqliteRecorder and a PostgresRecorder; ``check`` prints the same findings for both,
the known gap labelled, and never the DSN's password.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from quantcore.bus import EventBus
from quantcore.cli import main
from quantcore.events import GAP, GapEvent, GapReason
from quantcore.sinks.postgres import PostgresRecorder
from quantcore.sinks.sqlite import SqliteRecorder
from tests.sinks.helpers import make_bar, publish, start_all, stop_all
from tests.sinks.servers import PostgresServer


async def test_check_reads_a_postgres_table_as_it_reads_sqlite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], postgres_server: PostgresServer,
    unique: str,
) -> None:  # fmt: skip
    table = f"bars_{unique}"
    db = tmp_path / "bars.sqlite"
    bus = EventBus()
    recorders = [
        SqliteRecorder(path=str(db), table=table),
        PostgresRecorder(dsn=postgres_server.dsn, table=table, max_delay=30),
    ]
    await start_all(bus, recorders)
    publish(bus, [make_bar(i) for i in range(10)])
    bus.publish(GAP, GapEvent("BTCUSDT", "1m", make_bar(10).open_time, make_bar(12).open_time,
                              GapReason.EXCHANGE))  # fmt: skip
    publish(bus, [make_bar(i) for i in [*range(13, 20), *range(22, 25)]])
    await stop_all(bus, recorders)

    dsn = postgres_server.dsn.replace("postgres@", "postgres:s3cret@")  # trust auth ignores it
    assert main(["check", "--table", table, str(db), dsn]) == 1
    out = capsys.readouterr().out.splitlines()
    findings = [
        "  known gaps: 1 (3 bars, not counted as problems)",
        "    2024-09-04 02:37:00 .. 2024-09-04 02:39:00 missing (3 bars): "
        f"{GapReason.EXCHANGE.value}",
        "  holes: 1 (2 bars missing)",
        "    2024-09-04 02:47:00 .. 2024-09-04 02:48:00 missing (2 bars)",
    ]
    head = "BTCUSDT 1m: 20 rows, 2024-09-04 02:27:00 .. 2024-09-04 02:51:00 UTC: 1 problem"
    assert out == [
        f"{db}:{table}: {head}", *findings,
        f"{dsn.replace('s3cret', '***')}:{table}: {head}", *findings,
    ]  # fmt: skip
    assert "s3cret" not in "\n".join(out)

    assert main(["check", "--table", "missing_table", dsn]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"quantcore check: {dsn.replace('s3cret', '***')}:missing_table: ")
    assert "missing_table" in err and "s3cret" not in err and len(err.splitlines()) == 1
