"""``quantcore export --out F`` never destroys a file: real processes, real files, byte for byte.

An existing file, the database itself, a CSV a running recorder holds and a bad
``--db`` are each refused with one line and the file left exactly as it was; a stream
with no bars writes nothing (exit 1); a complete export appears under its name only
when complete.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path

import pytest

from quantcore.bus import EventBus
from quantcore.consumers.csv_recorder import HEADER, CsvRecorder
from quantcore.sinks.sqlite import SqliteRecorder
from tests.harness import csv_rows
from tests.paths import REPO
from tests.sinks.helpers import make_bar, publish, start_all, stop_all

pytestmark = pytest.mark.timeout(90)

BARS = 12


def export(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "quantcore", "export", *args],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    """A SqliteRecorder database of BARS BTCUSDT 1m bars, plus the CsvRecorder's CSV of
    the same bars (``expected.csv``'s bytes are what an export must produce)."""
    path = tmp_path / "bars.sqlite"
    bus = EventBus()
    csv = CsvRecorder(path=str(tmp_path / "expected_{symbol}_{interval}.csv"))
    recorder = SqliteRecorder(path=str(path))
    await start_all(bus, [csv, recorder])
    publish(bus, [make_bar(i) for i in range(BARS)])
    await stop_all(bus, [csv, recorder])
    return path


def files(folder: Path) -> dict[str, bytes]:
    """Every file in ``folder`` and its bytes: what "nothing touched" compares; except
    the WAL index SQLite itself keeps beside a WAL database any reader opens
    (``bars.sqlite-shm``, ``-wal``): SQLite's, not a file export writes."""
    sqlite_own = ("bars.sqlite-shm", "bars.sqlite-wal")
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name not in sqlite_own}


def args(db: Path, out: Path | str, *extra: str, symbol: str = "BTCUSDT") -> list[str]:
    return ["--db", str(db), "--symbol", symbol, "--interval", "1m", "--out", str(out), *extra]


def test_export_writes_the_recorders_bytes_and_leaves_no_temporary_file(
    tmp_path: Path, db: Path
) -> None:
    out = tmp_path / "out" / "export.csv"
    out.parent.mkdir()
    result = export(*args(db, out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == f"export: {BARS} bars of BTCUSDT 1m\n"
    assert out.read_bytes() == (tmp_path / "expected_BTCUSDT_1m.csv").read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["export.csv"]


def test_an_existing_out_is_refused_unless_force(tmp_path: Path, db: Path) -> None:
    out = tmp_path / "mine.csv"
    out.write_bytes(b"my own notes\n")
    before = files(tmp_path)
    result = export(*args(db, out), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"export: {out}: already exists; left as is (--force replaces it)\n"
    assert files(tmp_path) == before

    out.chmod(0o640)
    forced = export(*args(db, out, "--force"), cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert out.read_bytes() == (tmp_path / "expected_BTCUSDT_1m.csv").read_bytes()
    assert out.stat().st_mode & 0o777 == 0o640, "the replaced file keeps its permissions"


@pytest.mark.parametrize("force", [False, True])
def test_out_equal_to_db_is_refused_and_the_database_untouched(
    tmp_path: Path, db: Path, force: bool
) -> None:
    before = files(tmp_path)
    spelled = tmp_path / "." / db.name
    result = export(*args(db, spelled, *(["--force"] if force else [])), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        f"export: {spelled}: is the database being exported ({db}); choose another --out\n"
    )
    assert files(tmp_path) == before


@pytest.mark.parametrize("force", [False, True])
def test_a_bad_db_touches_nothing(tmp_path: Path, force: bool) -> None:
    missing = tmp_path / "none.sqlite"
    out = tmp_path / "new.csv"
    flag = ["--force"] if force else []
    result = export(*args(missing, out, *flag), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (2, f"export: {missing}: no such database file\n")
    not_a_db = tmp_path / "notes.sqlite"
    not_a_db.write_bytes(b"plain text, not SQLite\n" * 200)
    result = export(*args(not_a_db, out, *flag), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"export: {not_a_db}: file is not a database\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"], "no out, no temp"

    existing = tmp_path / "old.csv"
    existing.write_bytes(b"keep me\n")
    result = export(*args(missing, existing, "--force"), cwd=tmp_path)
    assert result.returncode == 2 and existing.read_bytes() == b"keep me\n"


def test_out_in_a_missing_folder_or_on_a_folder_is_one_line(tmp_path: Path, db: Path) -> None:
    before = files(tmp_path)
    missing = tmp_path / "no" / "such" / "x.csv"
    result = export(*args(db, missing), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2,
        f"export: {missing}: folder {missing.parent} does not exist\n",
    )
    result = export(*args(db, tmp_path, "--force"), cwd=tmp_path)
    assert (result.returncode, result.stderr) == (
        2,
        f"export: {tmp_path}: is a folder; --out needs a file name\n",
    )
    assert files(tmp_path) == before


@pytest.mark.parametrize(("symbol", "interval"), [("NOPEUSDT", "1m"), ("BTCUSDT", "5m")])
def test_a_stream_without_bars_writes_nothing_and_exits_1(
    tmp_path: Path, db: Path, symbol: str, interval: str
) -> None:
    out = tmp_path / "x.csv"
    before = files(tmp_path)
    argv = ["--db", str(db), "--symbol", symbol, "--interval", interval]
    for target in (str(out), "-"):
        result = export(*argv, "--out", target, cwd=tmp_path)
        assert result.returncode == 1
        assert result.stderr == (
            f"export: {db}: no bars of {symbol} {interval} in table 'bars' "
            "(it holds: BTCUSDT 1m); nothing written\n"
        )
        assert result.stdout == ""
    assert files(tmp_path) == before


def test_a_csv_a_running_recorder_holds_is_refused_byte_for_byte(tmp_path: Path, db: Path) -> None:
    """The demo records into data/demo/BTCUSDT_1m.csv in its own process; export aimed at
    that file (with and without --force), and history of the same config, are refused
    naming the recorder's pid, and the file is byte for byte what it was (the recorder
    paused by SIGSTOP, lock held, while they run), and the recorder goes on: a whole
    quantcore CSV, every row recorded."""
    recorder = subprocess.Popen(
        [sys.executable, "-m", "quantcore", "run", str(REPO / "config" / "demo.yaml")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    csv = tmp_path / "data" / "demo" / "BTCUSDT_1m.csv"
    try:
        deadline = time.monotonic() + 40
        while not (csv.exists() and len(csv.read_bytes().splitlines()) >= 3):
            assert time.monotonic() < deadline, "the demo recorded nothing"
            time.sleep(0.1)
        for flag in ([], ["--force"]):
            os.kill(recorder.pid, signal.SIGSTOP)  # holds its lock, appends nothing meanwhile
            try:
                before = csv.read_bytes()
                result = export(*args(db, csv, *flag), cwd=tmp_path)
                assert csv.read_bytes() == before, "byte for byte"
            finally:
                os.kill(recorder.pid, signal.SIGCONT)
            assert result.returncode == 2
            assert result.stderr == (
                f"export: {csv}: is being written by a quantcore process "
                f"(pid {recorder.pid}); left as is\n"
            )
        os.kill(recorder.pid, signal.SIGSTOP)  # history aimed at the same file: refused too
        try:
            before = csv.read_bytes()
            since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86_400))
            history = subprocess.run(
                [sys.executable, "-m", "quantcore", "history", str(REPO / "config" / "demo.yaml"),
                 "--since", since],
                cwd=tmp_path, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert csv.read_bytes() == before, "history changed a file a recorder holds"
        finally:
            os.kill(recorder.pid, signal.SIGCONT)
        assert history.returncode == 2, history.stderr
        assert history.stderr.strip().endswith(
            f"{csv.relative_to(tmp_path)} is being written by another quantcore process "
            f"(pid {recorder.pid})"
        ), history.stderr
        assert sorted(p.name for p in csv.parent.iterdir()) == [
            "BTCUSDT_1m.csv",
            "BTCUSDT_1m.csv.lock",
        ], "no temporary file"
        held = len(csv_rows(csv))
        while len(csv_rows(csv)) <= held:  # the recorder goes on after the refusals
            assert time.monotonic() < deadline + 30, "the recorder stopped recording"
            time.sleep(0.1)
    finally:
        os.kill(recorder.pid, signal.SIGTERM)
        out, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, err
    assert csv.read_bytes().startswith(HEADER.encode())
    rows = csv_rows(csv)
    recorded = int(out.strip().splitlines()[-1].split("bars recorded=")[1].split()[0])
    assert recorded == len(rows) > held
    assert all(a[6] < b[6] for a, b in pairwise(rows))
