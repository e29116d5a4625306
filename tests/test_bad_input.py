"""The bad-input tour: each bad config, file or moment is one clear line and a documented
exit code, never a traceback, and nothing that existed before is altered.

Real processes (``python -m quantcore``) and real files; the exchange is the local one,
embedded or standalone.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.config import ConfigError, load_config
from quantcore.consumers.csv_recorder import HEADER, format_row
from quantcore.envvars import EnvVarError, substitute
from quantcore.redact import redact
from quantcore.sim import LocalExchange
from tests.paths import REST_BTC
from tests.sinks.helpers import make_bar

pytestmark = pytest.mark.timeout(120)

SUMMARY = re.compile(r"^quantcore: stopped after [0-9.]+s: bars recorded=\d+ ")


def quantcore(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "quantcore", *args], cwd=cwd, capture_output=True, text=True,
        timeout=90, env=None if env is None else {**os.environ, **env},
    )  # fmt: skip


async def quantcore_async(*args: str, cwd: Path) -> Any:
    """``quantcore`` without blocking the event loop (an in-process exchange serves it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "quantcore", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 90)
    return subprocess.CompletedProcess(args, process.returncode, out.decode(), err.decode())


def write(folder: Path, config: dict[str, Any] | str, name: str = "c.yaml") -> Path:
    path = folder / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    return path


def files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name → bytes), folders included as b"/"."""
    return {
        str(p.relative_to(folder)): b"/" if p.is_dir() else p.read_bytes()
        for p in sorted(folder.rglob("*"))
    }


def one_line_exit_2(result: Any) -> str:
    """The single stderr line of a refused run/validate (asserting it is one, no traceback)."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    return str(result.stderr)


LOCAL = {"local": {"speed": 60}}
CSV = {"class": "csv", "params": {"path": "data/{symbol}_{interval}.csv"}}


# -- SIGTERM at any moment -------------------------------------------------------------


def catches_sigterm(pid: int) -> bool:
    """The process has a handler for SIGTERM (``SigCgt`` in /proc), i.e. it is past the
    first lines of ``quantcore.cli.main``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M)[1], 16)  # type: ignore[index]
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.parametrize("moment", ["importing", "csv created"])
def test_sigterm_in_the_first_moments_exits_0_with_the_summary(tmp_path: Path, moment: str) -> None:
    """SIGTERM while the command line is still importing, and once the CSV exists (the
    local exchange and the feed starting): exit 0 and the summary, as the README promises
    (it used to be 143, killed by the default action, before the App's handlers existed)."""
    config = write(tmp_path, {"exchange": LOCAL, "streams": [{"symbol": "BTCUSDT"}],
                              "consumers": [CSV]})  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "quantcore", "run", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    csv = tmp_path / "data" / "BTCUSDT_1m.csv"
    deadline = time.monotonic() + 30
    ready = (lambda: catches_sigterm(process.pid)) if moment == "importing" else csv.exists
    while not ready():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.001)
    started = csv.exists()
    os.kill(process.pid, signal.SIGTERM)
    assert moment != "importing" or not started, "the handler is there before anything starts"
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert SUMMARY.match(out.strip().splitlines()[-1]), out
    assert "Traceback" not in out + err


# -- unknown symbols, refused starts ---------------------------------------------------


def existing_csv(folder: Path) -> Path:
    """A quantcore CSV recorded earlier (3 bars), which a refused start must not touch."""
    path = folder / "data" / "BTCUSDT_1m.csv"
    path.parent.mkdir(parents=True)
    path.write_text(HEADER + "".join(format_row(make_bar(i)) for i in range(3)))
    return path


async def test_unknown_symbol_is_refused_by_the_embedded_exchange_as_by_a_standalone_one(
    tmp_path: Path,
) -> None:
    """NOPECOIN is refused against a standalone local exchange that plays BTCUSDT; the
    embedded one, replaying BTCUSDT from a file, refuses it the same way at start (it used
    to play it as a random walk). Each refusal names the file, the field and the venue;
    the existing CSV stays byte for byte, and nothing new (no header-only CSV, no .lock,
    no folder) is left behind."""
    streams = [{"symbol": "BTCUSDT"}, {"symbol": "NOPECOIN"}]
    for where in ("standalone", "embedded"):
        folder = tmp_path / where
        folder.mkdir()
        existing_csv(folder)
        if where == "embedded":
            local = {"local": {"speed": 60, "data": [f"BTCUSDT={REST_BTC}"]}}
            config = write(folder, {"exchange": local, "streams": streams, "consumers": [CSV]})
            before = files(folder)
            result = quantcore("run", str(config), cwd=folder)
            rest = r"http://127\.0\.0\.1:\d+/api"
            hint = "; exchange.local.symbols lists what it generates"
        else:
            async with LocalExchange(symbols=["BTCUSDT"], speed=60) as exchange:
                urls = {"ws_url": exchange.ws_url, "rest_url": exchange.rest_url}
                config = write(folder, {"exchange": urls, "streams": streams, "consumers": [CSV]})
                before = files(folder)
                result = await quantcore_async("run", str(config), cwd=folder)
            rest, hint = re.escape(exchange.rest_url), ""
        line = one_line_exit_2(result)
        assert re.fullmatch(
            f"quantcore: {re.escape(str(config))}: streams\\[1\\]\\.symbol \\(venue binance-spot\\):"
            f" unknown symbol NOPECOIN: not listed by {rest}/v3/exchangeInfo{re.escape(hint)}\n",
            line,
        ), line
        assert files(folder) == before, where


def test_unknown_symbol_of_the_generating_embedded_exchange_is_a_config_error(
    tmp_path: Path,
) -> None:
    """Without replay files the embedded exchange's symbols are known from the config, so
    validate refuses NOPECOIN too, before anything starts."""
    config = write(tmp_path, {"exchange": LOCAL, "streams": [{"symbol": "BTCUSDT"},
                              {"symbol": "nope-coin"}], "consumers": [CSV]})  # fmt: skip
    for command in ("validate", "run"):
        assert one_line_exit_2(quantcore(command, str(config), cwd=tmp_path)) == (
            f"quantcore: {config}: streams[1].symbol (venue binance-spot): unknown symbol "
            "NOPECOIN: not in exchange.local.symbols (BTCUSDT, ETHUSDT, BNBUSDT, SOLUSDT, "
            "XRPUSDT, DOGEUSDT, BTCUSD_PERP, ETHUSD_PERP), what the embedded local exchange "
            "generates\n"
        )
    assert files(tmp_path) == {"c.yaml": config.read_bytes()}
    raw = yaml.safe_load(config.read_text())
    raw["exchange"]["local"]["symbols"] = ["BTCUSDT", "NOPECOIN"]
    assert quantcore("validate", str(write(tmp_path, raw)), cwd=tmp_path).returncode == 0


def test_refused_start_leaves_no_new_files_and_folders(tmp_path: Path) -> None:
    """Nothing existed before: after the refusal, nothing exists (no data/ folder)."""
    local = {"local": {"speed": 60, "data": [f"BTCUSDT={REST_BTC}"]}}
    config = write(tmp_path, {"exchange": local, "streams": [{"symbol": "NOPECOIN"}],
                              "consumers": [CSV, {"class": "sqlite",
                                                  "params": {"path": "data/db/bars.sqlite"}}]})  # fmt: skip
    before = files(tmp_path)
    one_line_exit_2(quantcore("run", str(config), cwd=tmp_path))
    assert files(tmp_path) == before


VENUES = [
    {"symbol": "BTCUSDT"},
    {"symbol": "BTCUSDT", "venue": "binance-usdm"},
    {"symbol": "NOPEUSDT", "venue": "binance-usdm"},
    {"symbol": "BTCUSD_PERP", "venue": "binance-coinm"},
]


def test_a_venues_refused_symbol_names_the_stream_and_the_venue(tmp_path: Path) -> None:
    """The third stream's symbol, unknown to USD-M: the line names streams[2].symbol and
    binance-usdm (it named neither). The whole run stops (exit 2), as for any config
    error: recording some venues while the config says more would be a half start."""
    local = {"local": {"speed": 60, "data": [f"BTCUSDT={REST_BTC}"]}}  # refused at start
    config = write(tmp_path, {"exchange": local, "streams": VENUES, "consumers": [CSV]})
    line = one_line_exit_2(quantcore("run", str(config), cwd=tmp_path))
    assert line.startswith(
        f"quantcore: {config}: streams[2].symbol (venue binance-usdm): unknown symbol NOPEUSDT:"
        " not listed by http://127.0.0.1:"
    ), line
    assert "/fapi/v1/exchangeInfo; exchange.local.symbols lists what it generates\n" in line
    assert files(tmp_path) == {"c.yaml": config.read_bytes()}


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        ({"interval": "7m"}, "streams[2].interval: '7m' is not a fixed-length"),
        ({"symbol": "BTC.USDT"}, "streams[2].symbol: 'BTC.USDT' is not a binance-usdm symbol"),
    ],
)
def test_several_venues_name_the_right_stream(
    tmp_path: Path, stream: dict[str, str], message: str
) -> None:
    streams = [*VENUES[:2], {**VENUES[2], **stream}, VENUES[3]]
    config = write(tmp_path, {"exchange": LOCAL, "streams": streams})
    for command in ("validate", "run"):
        line = one_line_exit_2(quantcore(command, str(config), cwd=tmp_path))
        assert line.startswith(f"quantcore: {config}: {message}"), line


# -- file names ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "shown"),
    [
        ("data/{symbol.upper}.csv", "{symbol.upper}"),
        ("data/{symbol!r}_{interval}.csv", "{symbol!r}"),
        ("data/{symbol:>30}_{interval}.csv", "{symbol:>30}"),
        ("data/{symbol[0]}_{interval}.csv", "{symbol[0]}"),
        ("data/{0}_{interval}.csv", "{0}"),
        ("data/{}_{interval}.csv", "{}"),
        ("data/{sym}_{interval}.csv", "{sym}"),
    ],
)
def test_only_plain_symbol_interval_venue_in_path_templates(
    tmp_path: Path, template: str, shown: str
) -> None:
    config = write(tmp_path, {"streams": [{"symbol": "BTCUSDT"}],
                              "consumers": [{"class": "csv", "params": {"path": template}}]})  # fmt: skip
    with pytest.raises(ConfigError) as info:
        load_config(config)
    assert str(info.value) == (
        f"{config}: consumers[0].params.path: {template!r}: {shown} is not allowed; a file "
        "name may use only {symbol}, {interval}, {venue}"
    )
    line = one_line_exit_2(quantcore("validate", str(config), cwd=tmp_path))
    assert line == f"quantcore: {info.value}\n"


def test_unbalanced_brace_in_a_template_is_one_line(tmp_path: Path) -> None:
    config = write(tmp_path, {"streams": [{"symbol": "BTCUSDT"}],
                              "consumers": [{"class": "csv", "params": {"path": "d/{symbol"}}]})  # fmt: skip
    line = one_line_exit_2(quantcore("run", str(config), cwd=tmp_path))
    assert line.startswith(f"quantcore: {config}: consumers[0].params.path: 'd/{{symbol': ")
    assert not (tmp_path / "d").exists()


def test_two_streams_in_one_file_is_a_config_error_naming_both(tmp_path: Path) -> None:
    """``{symbol}`` without ``{interval}``: both BTCUSDT streams would write one file. It
    used to start, and the second stream's lock blamed "another quantcore process" with
    our own pid; validate passed it."""
    streams = [
        {"symbol": "BTCUSDT"},
        {"symbol": "ETHUSDT"},
        {"symbol": "BTCUSDT", "interval": "5m"},
    ]
    consumers = ["history", {"class": "csv", "params": {"path": "data/{symbol}.csv"}}]
    config = write(tmp_path, {"exchange": LOCAL, "streams": streams, "consumers": consumers})
    expected = (
        f"quantcore: {config}: consumers[1].params.path: 'data/{{symbol}}.csv' maps streams[0] "
        "(BTCUSDT 1m) and streams[2] (BTCUSDT 5m) to one file, data/BTCUSDT.csv; make the "
        "template tell them apart\n"
    )
    for command in ("validate", "run"):
        assert one_line_exit_2(quantcore(command, str(config), cwd=tmp_path)) == expected
    assert not (tmp_path / "data").exists()


def test_two_csv_consumers_on_one_file_is_a_config_error(tmp_path: Path) -> None:
    consumers = [CSV, {"class": "csv", "params": {"path": "./data/{symbol}_{interval}.csv"}}]
    config = write(tmp_path, {"streams": [{"symbol": "BTCUSDT"}], "consumers": consumers})
    line = one_line_exit_2(quantcore("validate", str(config), cwd=tmp_path))
    assert line == (
        f"quantcore: {config}: consumers[0].params.path and consumers[1].params.path both "
        "write ./data/BTCUSDT_1m.csv (streams[0] (BTCUSDT 1m), streams[0] (BTCUSDT 1m)); "
        "give each its own path\n"
    )


# -- configs that used to crash with a traceback ---------------------------------------


def test_config_that_is_not_utf8(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_bytes(b"streams:\n  - symbol: BTCUSDT  # caf\xe9 latin-1\n")
    for command in ("validate", "run"):
        line = one_line_exit_2(quantcore(command, str(config), cwd=tmp_path))
        assert line == (
            f"quantcore: {config}: not UTF-8 text (byte 0xe9 at offset 35); save the config "
            "as UTF-8\n"
        )


def test_consumer_module_with_a_syntax_error(tmp_path: Path) -> None:
    (tmp_path / "broken_strategy.py").write_text("class Broken(:\n    pass\n")
    config = write(tmp_path, {"streams": [{"symbol": "BTCUSDT"}],
                              "consumers": [{"class": "broken_strategy:Broken"}]})  # fmt: skip
    for command in ("validate", "run"):
        line = one_line_exit_2(quantcore(command, str(config), cwd=tmp_path))
        assert line.startswith(
            f"quantcore: {config}: consumers[0].class: cannot import 'broken_strategy': "
            "SyntaxError: "
        ), line
        assert "broken_strategy.py, line 1" in line


def test_component_whose_init_raises(tmp_path: Path) -> None:
    (tmp_path / "raising.py").write_text(
        "from quantcore import Component\n\n\n"
        "class Raising(Component):\n"
        "    def __init__(self, **kw):\n"
        "        super().__init__()\n"
        "        raise RuntimeError('model file missing: /models/x.bin')\n"
    )
    config = write(tmp_path, {"exchange": LOCAL, "streams": [{"symbol": "BTCUSDT"}],
                              "consumers": [CSV, {"class": "raising:Raising"}]})  # fmt: skip
    for command in ("validate", "run"):
        line = one_line_exit_2(quantcore(command, str(config), cwd=tmp_path))
        assert line == (
            f"quantcore: {config}: consumers[1]: Raising(...) failed: RuntimeError: model "
            "file missing: /models/x.bin\n"
        )
    assert not (tmp_path / "data").exists()


# -- metrics exposed -------------------------------------------------------------------


def test_metrics_on_a_non_loopback_host_is_warned(tmp_path: Path) -> None:
    raw = {"exchange": LOCAL, "streams": [{"symbol": "BTCUSDT"}], "consumers": [CSV],
           "metrics": {"port": 0, "host": "0.0.0.0"}}  # fmt: skip
    config = write(tmp_path, raw)
    result = quantcore("run", str(config), "--max-bars", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stdout.splitlines() if " WARNING " in line]
    assert len(warned) == 1 and warned[0].endswith(
        "WARNING metrics.host '0.0.0.0' is not loopback: /metrics and /health are served "
        "without authentication to every network this host reaches; use 127.0.0.1 unless a "
        "firewall or proxy guards the port"
    ), result.stdout
    shown = quantcore("validate", str(config), cwd=tmp_path).stdout.splitlines()[-1]
    assert shown.startswith("metrics: http://0.0.0.0:0/metrics (metrics.host '0.0.0.0' is not")

    raw["metrics"] = {"port": 0}
    quiet = quantcore("run", str(write(tmp_path, raw)), "--max-bars", "1", cwd=tmp_path)
    assert quiet.returncode == 0 and " WARNING " not in quiet.stdout


# -- secrets ---------------------------------------------------------------------------

SECRET_SINKS = [
    {"class": "postgres", "params": {"dsn": "postgresql://trader:${PG_PASSWORD}@db:5432/market"}},
    {"class": "redis", "params": {"url": "redis://:${REDIS_PASSWORD}@cache:6379/0"}},
]


def test_validate_prints_no_password(tmp_path: Path) -> None:
    literal = [
        {"class": "postgres", "params": {"dsn": "postgresql://trader:s3cretpass@db:5432/m"}},
        {"class": "redis", "params": {"url": "redis://:r3dispass@cache:6379/0"}},
    ]
    config = write(tmp_path, {"streams": [{"symbol": "BTCUSDT"}], "consumers": literal})
    result = quantcore("validate", str(config), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s3cretpass" not in result.stdout and "r3dispass" not in result.stdout
    assert "{'dsn': 'postgresql://trader:***@db:5432/m'}" in result.stdout
    assert "{'url': 'redis://:***@cache:6379/0'}" in result.stdout


def test_env_vars_fill_config_values_and_stay_secret(tmp_path: Path) -> None:
    config = write(tmp_path, {"streams": [{"symbol": "BTCUSDT"}], "consumers": SECRET_SINKS})
    env = {"PG_PASSWORD": "s3cretpass", "REDIS_PASSWORD": "r3dispass"}
    result = quantcore("validate", str(config), cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "s3cretpass" not in result.stdout and "r3dispass" not in result.stdout
    assert "postgresql://trader:***@db:5432/market" in result.stdout

    os.environ.update(env)
    try:
        specs = load_config(config).consumers
    finally:
        for name in env:
            del os.environ[name]
    assert specs[0].params["dsn"] == "postgresql://trader:s3cretpass@db:5432/market"
    assert specs[1].params["url"] == "redis://:r3dispass@cache:6379/0"

    unset = quantcore("validate", str(config), cwd=tmp_path, env={"PG_PASSWORD": "x"})
    assert one_line_exit_2(unset) == (
        f"quantcore: {config}: consumers[1].params.url: environment variable REDIS_PASSWORD "
        "is not set (${REDIS_PASSWORD})\n"
    )


def test_logs_never_show_a_password(tmp_path: Path) -> None:
    """A component that logs its DSN (as a user's might): the log line is redacted."""
    (tmp_path / "chatty.py").write_text(
        "import logging\n\nfrom quantcore import Component\n\n\n"
        "class Chatty(Component):\n"
        "    def __init__(self, dsn: str) -> None:\n"
        "        super().__init__()\n"
        "        self.dsn = dsn\n\n"
        "    async def start(self) -> None:\n"
        "        logging.getLogger('chatty').info('connecting to %s', self.dsn)\n"
    )
    consumers = [{"class": "chatty:Chatty", "params": {"dsn": "postgresql://u:${PW}@h/db"}}]
    config = write(tmp_path, {"exchange": LOCAL, "streams": [{"symbol": "BTCUSDT"}],
                              "consumers": consumers})  # fmt: skip
    result = quantcore("run", str(config), "--max-bars", "1", cwd=tmp_path, env={"PW": "hunter2"})
    assert result.returncode == 0, result.stderr
    assert "INFO    connecting to postgresql://u:***@h/db" in result.stdout
    assert "hunter2" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://trader:s3cret@db:5432/m", "postgresql://trader:***@db:5432/m"),
        ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
        ("rediss://default:s3:cr@t@cache/0", "rediss://default:***@t@cache/0"),
        ("{'dsn': 'postgres://a:s3cret@h/d'}", "{'dsn': 'postgres://a:***@h/d'}"),
        ("host=db user=u password=s3cret dbname=m", "host=db user=u password=*** dbname=m"),
        ("host=db password='s3 cret' port=5", "host=db password=*** port=5"),
        ("ws://127.0.0.1:40123/ http://h:80/api", "ws://127.0.0.1:40123/ http://h:80/api"),
        ("postgresql://trader@db/m", "postgresql://trader@db/m"),
        ("ws://127.0.0.1:9443/ws/btcusdt@kline_1m", "ws://127.0.0.1:9443/ws/btcusdt@kline_1m"),
        ("http://h:80/x?mail=a@b.c", "http://h:80/x?mail=a@b.c"),
    ],
)
def test_redact_hides_every_password_form(text: str, shown: str) -> None:
    assert redact(text) == shown


def test_env_substitution_rules() -> None:
    env = {"A": "1", "B": "x y"}
    raw = {"k": "${A}-${B}", "l": ["$${A}", "plain $A", 3], "m": {"n": None}}
    assert substitute(raw, env) == {"k": "1-x y", "l": ["${A}", "plain $A", 3], "m": {"n": None}}
    with pytest.raises(EnvVarError, match=r"^l\[1\]: environment variable C is not set"):
        substitute({"l": ["ok", "${C}"]}, env)
    with pytest.raises(EnvVarError, match=r"^k: \$\{A B\} is not an environment variable"):
        substitute({"k": "${A B}"}, env)
