"""deploy/: the systemd unit, the Dockerfile and the compose file, checked without systemd
or a Docker daemon (neither runs here): the unit is parsed (and, where ``systemd-analyze``
exists, verified), the Dockerfile and compose file are linted against the repository."""

from __future__ import annotations

import configparser
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from quantcore.cli import build_parser
from quantcore.config import load_config
from tests.paths import REPO

DEPLOY = REPO / "deploy"


def unit() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keep key case
    parser.read_string((DEPLOY / "quantcore.service").read_text())
    return parser


def test_systemd_unit_restarts_on_failure_but_not_on_bad_config(tmp_path: Path) -> None:
    service = unit()["Service"]
    assert service["Restart"] == "on-failure"
    assert service["RestartPreventExitStatus"].split() == ["2"]
    assert service["KillSignal"] == "SIGTERM" and int(service["TimeoutStopSec"]) >= 10
    assert service["User"] != "root"
    command = shlex.split(service["ExecStart"])
    assert command[1:4] == ["-m", "quantcore", "run"] and len(command) == 5
    assert unit()["Install"]["WantedBy"] == "multi-user.target"
    build_parser().parse_args(command[3:])  # arguments the CLI accepts

    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # verified too where systemd is installed (it is on this VM)
        text = (DEPLOY / "quantcore.service").read_text()
        local = tmp_path / "quantcore.service"
        local.write_text(text.replace(command[0], sys.executable))
        result = subprocess.run(
            [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0 and result.stderr == "", result.stderr


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_dockerfile_builds_from_this_repo_and_runs_unprivileged() -> None:
    steps = dockerfile()
    assert steps[0][0] == "FROM"
    image = steps[0][1]
    assert image.startswith("python:3.1") and image.endswith("-slim"), image
    minor = int(image.split(":")[1].split("-")[0].split(".")[1])
    assert minor >= 11, "setup.cfg: python_requires >= 3.11"
    for instruction, args in steps:
        if instruction == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"
    users = [args for instruction, args in steps if instruction == "USER"]
    assert users and users[-1] not in {"root", "0"}
    names = [instruction for instruction, _ in steps]
    assert names.index("USER") < names.index("CMD")
    assert ("STOPSIGNAL", "SIGTERM") in steps
    cmd = json.loads(dict(steps)["CMD"])
    assert cmd[:2] == ["sh", "-c"] and cmd[2].startswith("exec python -m quantcore run ")
    env = dict(steps)["ENV"]
    default_config = env.split("QUANTCORE_CONFIG=")[1].split()[0]
    load_config(REPO / default_config)


def test_compose_runs_the_recorder_with_redis_and_postgres(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The passwords live in the environment only: compose requires them (``${VAR:?}``),
    hands them to the servers and the recorder, whose config says ``${VAR}``."""
    secrets = {"QUANTCORE_PG_PASSWORD": "pg-s3cret", "QUANTCORE_REDIS_PASSWORD": "rd-s3cret"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    texts = [(DEPLOY / name).read_text() for name in ("compose.yaml", "compose.quantcore.yaml")]
    for text in texts:
        assert "s3cret" not in text and ":quantcore@" not in text, "no password in the files"
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"recorder", "postgres", "redis"}
    recorder = services["recorder"]
    build = recorder["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert set(recorder["depends_on"]) == {"postgres", "redis"}
    mounted = [v.split(":") for v in recorder["volumes"] if v.startswith("./")]
    [(host, inside, _)] = mounted
    assert inside == recorder["environment"]["QUANTCORE_CONFIG"]
    config = load_config(DEPLOY / host)
    names = {spec.cls.__name__: dict(spec.params) for spec in config.consumers}
    pg = services["postgres"]["environment"]
    user, password, db = pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"]
    required = "${QUANTCORE_PG_PASSWORD:?set QUANTCORE_PG_PASSWORD}"
    assert password == recorder["environment"]["QUANTCORE_PG_PASSWORD"] == required
    redis_password = "${QUANTCORE_REDIS_PASSWORD:?set QUANTCORE_REDIS_PASSWORD}"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == redis_password
    assert recorder["environment"]["QUANTCORE_REDIS_PASSWORD"] == redis_password
    assert "--requirepass" in services["redis"]["command"][-1]
    assert names["PostgresRecorder"]["dsn"] == (f"postgresql://{user}:pg-s3cret@postgres:5432/{db}")
    assert names["RedisStreamPublisher"]["url"] == "redis://:rd-s3cret@redis:6379/0"
    for service in services.values():
        assert "healthcheck" in service or service is recorder
