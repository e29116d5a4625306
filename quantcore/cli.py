"""quantcore: record Binance klines in real time; replay, chart and export them.

Exit codes: 0 after a graceful stop (Ctrl-C, SIGTERM, --duration, --max-bars) with
everything recorded; 2 for bad input or a refused start (config, data file, arguments,
port in use, a file that is not quantcore's or is written by another process), reported
as one line on stderr; 3 when the run stopped with recorded data incomplete (bars that
could not be written, or closed bars a subscriber never received).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from quantcore.redact import MASK, redact, secret_key

if TYPE_CHECKING:
    from quantcore.app import App
    from quantcore.config import AppConfig, MetricsConfig

log = logging.getLogger("quantcore")

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3


def _run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("config", help="YAML config, e.g. config/btc.yaml or config/demo.yaml")
    run.add_argument("--duration", type=_positive, help="stop after this many seconds")
    run.add_argument("--max-bars", type=int, help="stop after this many closed bars")
    run.set_defaults(handler=_run)


def _simulate_options(simulate: argparse.ArgumentParser) -> None:
    from quantcore.sim.cli import configure_parser

    configure_parser(simulate)
    simulate.set_defaults(handler=_simulate)


def _plot_options(chart: argparse.ArgumentParser) -> None:
    from quantcore import plot

    plot.configure_parser(chart)
    chart.set_defaults(handler=plot.main)


def _export_options(export: argparse.ArgumentParser) -> None:
    from quantcore.sinks import export as export_module

    export_module.configure_parser(export)
    export.set_defaults(handler=_export)


def _validate_options(validate: argparse.ArgumentParser) -> None:
    validate.add_argument("config", help="YAML config to check")
    validate.set_defaults(handler=_validate)


def _history_options(past: argparse.ArgumentParser) -> None:
    from quantcore.history import command as history

    history.configure_parser(past)
    past.set_defaults(handler=history.main)


def _replay_options(replay: argparse.ArgumentParser) -> None:
    from quantcore.replay import command as replay_command

    replay_command.configure_parser(replay)
    replay.set_defaults(handler=replay_command.main)


def _upgrade_options(upgrade: argparse.ArgumentParser) -> None:
    from quantcore.sinks import parquet_upgrade

    parquet_upgrade.configure_parser(upgrade)
    upgrade.set_defaults(handler=parquet_upgrade.main)


def _check_options(check: argparse.ArgumentParser) -> None:
    from quantcore import quality

    quality.configure_parser(check)
    check.set_defaults(handler=quality.main)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "run": ("record: run the feed and consumers from a YAML config", _run_options),
    "simulate": ("serve the Binance-compatible local exchange", _simulate_options),
    "plot": ("draw a candlestick PNG of a recorded CSV", _plot_options),
    "export": (
        "one stream of a SQLite database as CSV, or a recording into a Parquet store",
        _export_options,
    ),
    "validate": (
        "check a config, print the resolved settings; connects to nothing",
        _validate_options,
    ),
    "history": ("record the past: archive + REST, verified", _history_options),
    "replay": ("feed a config's components its recorded bars", _replay_options),
    "check": (
        "data-quality report of recorded CSV/SQLite files and Parquet stores",
        _check_options,
    ),
    "upgrade": ("rewrite a Parquet store of an earlier layout in place", _upgrade_options),
}
"""Command → (one-line help, what adds its options and handler). A new command is one
more entry. Each command's modules are imported only when that command runs, so a
command starts without loading the others (``check`` does not import the feed)."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """One subparser per command, each with its one-line help; the options (and imports)
    of ``only`` (None: every command) are added, ``--help`` of the rest lists them."""
    summary, _, details = (__doc__ or "").partition("\n\n")
    parser = argparse.ArgumentParser(
        prog="quantcore",
        description=summary,
        epilog=details,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (text, add_options) in COMMANDS.items():
        command = commands.add_parser(name, help=text)
        if only is None or only == name:
            add_options(command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # ``run`` answers Ctrl-C / SIGTERM gracefully from here on, before the heavy imports.
    guard = _stop_on_signals() if words[:1] == ["run"] else contextlib.nullcontext()
    with guard:
        args = build_parser(words[0] if words[:1] and words[0] in COMMANDS else "").parse_args(
            words
        )
        code: int = args.handler(args)
    return code


def _run(args: argparse.Namespace) -> int:
    return run_command(args.config, args.duration, args.max_bars)


def _export(args: argparse.Namespace) -> int:
    """``export``: a SQLite stream as CSV, or ``--to parquet`` (pyarrow, an optional extra)."""
    from quantcore.sinks import export

    if not export.pick_source(args):
        return export.EXIT_BAD_INPUT
    if args.to != "parquet":
        return export.run(args)
    try:
        from quantcore.sinks import parquet_export
    except ImportError as exc:
        print(f"export: --to parquet needs {exc.name} (pip install 'quantcore[parquet]')",
              file=sys.stderr)  # fmt: skip
        return export.EXIT_BAD_INPUT
    return parquet_export.run(args)


def _simulate(args: argparse.Namespace) -> int:
    from quantcore.sim.cli import run as simulate

    return asyncio.run(simulate(args))


def _validate(args: argparse.Namespace) -> int:
    """Load and check the config, build its components (their parameters are checked,
    nothing is opened or connected), print the resolved settings; exit 2 if bad."""
    from quantcore.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        for spec in config.consumers:
            spec.build()
    except ConfigError as exc:
        message = str(exc)
        if not message.startswith(f"{args.config}:"):
            message = f"{args.config}: {message}"
        print(redact(f"quantcore: {message}"), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(redact("\n".join(describe_config(config))))
    return EXIT_OK


def describe_config(config: AppConfig) -> list[str]:
    """The settings a run would use, defaults filled in, one topic per line."""
    lines = [f"{config.source}: valid"]
    if config.local is not None:
        local = config.local
        speed = "max" if local.rate is None else f"{local.rate:g}x"
        specs = local.data if isinstance(local.data, tuple) else ()
        walk = f"seeded random walk (seed {local.seed}) of {', '.join(local.symbols)}"
        data = ", ".join(specs) or walk
        lines.append(f"exchange: local on 127.0.0.1 port {local.port or 'any'}, speed {speed}")
        lines.append(f"  data: {data}; history_bars={local.history_bars}")
    elif config.redis is not None:
        redis = config.redis
        lines.append(
            f"exchange: Redis Streams {redis.url} prefix={redis.prefix} "
            f"group={redis.group} consumer={redis.consumer} partials={redis.partials}"
        )
    else:
        lines.append(f"exchange: ws={config.feed.ws_url} rest={config.feed.rest_url}")
    lines.append(f"venue: {config.venue}")
    for part in config.parts:
        lines.append(f"  {part.venue}: {', '.join(f'{s} {i}' for s, i in part.streams)}")
    lines.append(f"streams ({len(config.streams)}):")
    lines.extend(f"  {symbol} {interval}" for symbol, interval in config.streams)
    feed = config.feed
    shown = [
        f"{f.name}={getattr(feed, f.name)}"
        for f in dataclasses.fields(feed)
        if f.name
        not in {"ws_url", "rest_url", "venue", "reconnect", "connect_limits", "rest_limits"}
    ]
    backoff = feed.reconnect.backoff
    attempts = feed.reconnect.max_attempts
    lines.append(f"feed: {' '.join(shown)}")
    lines.append(
        f"  reconnect: initial_delay={backoff.initial:g} max_delay={backoff.maximum:g} "
        f"max_attempts={'unlimited' if attempts is None else attempts}"
    )
    lines.append(f"consumers ({len(config.consumers)}):")
    for spec in config.consumers:
        target = f"{spec.cls.__module__}:{spec.cls.__qualname__}"
        masked = {k: MASK if secret_key(k) else v for k, v in spec.params.items()}
        params = f" {masked}" if masked else ""
        lines.append(f"  {target}{params}")
    runtime = config.runtime
    lines.append(
        f"runtime: queue_size={runtime.queue_size} max_backlog={runtime.max_backlog} "
        f"stop_timeout={runtime.stop_timeout:g} loop={runtime.loop}"
    )
    lines.append(f"logging: level={config.log_level}")
    if config.metrics is not None:
        metrics = config.metrics
        exposed = f" ({exposure(metrics)})" if exposure(metrics) else ""
        lines.append(f"metrics: http://{metrics.host}:{metrics.port}/metrics{exposed}")
    return lines


def exposure(metrics: MetricsConfig) -> str | None:
    """Why the metrics endpoint is reachable from other machines, or None on loopback."""
    host = metrics.host
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (
        f"metrics.host {host!r} is not loopback: /metrics and /health are served without "
        "authentication to every network this host reaches; use 127.0.0.1 unless a "
        "firewall or proxy guards the port"
    )


def loop_factory(kind: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """``runtime.loop``: asyncio's own loop (None), or uvloop's if it is installed."""
    from quantcore.config import ConfigError

    if kind != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        raise ConfigError(
            "runtime.loop: 'uvloop' is not installed (pip install 'quantcore[fast]')"
        ) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_command(config_path: str, duration: float | None, max_bars: int | None) -> int:
    with _stop_on_signals() as holder:
        from quantcore.app import App
        from quantcore.config import ConfigError, load_config
        from quantcore.logs import configure_logging

        try:
            config = load_config(config_path)
            if config.venue == "replay":
                from quantcore.replay.feed import replay_config
                from quantcore.replay.settings import ReplaySettings

                config = replay_config(config, config.replay or ReplaySettings())
            if max_bars is not None and max_bars < 1:
                raise ConfigError(f"--max-bars: {max_bars} is not a positive integer")
            configure_logging(config.log_level, config.log_file)
            if config.metrics is not None and (warning := exposure(config.metrics)):
                log.warning("%s", warning)
            app = holder.app = App(config)
            if holder.stopped:
                app.stop()
            with asyncio.Runner(loop_factory=loop_factory(config.runtime.loop)) as runner:
                summary = runner.run(app.run(duration=duration, max_bars=max_bars))
        except ConfigError as exc:
            print(redact(f"quantcore: {exc}"), file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            return EXIT_OK
    print(summary.line(), flush=True)
    if summary.incomplete:
        print(
            f"quantcore: recorded data incomplete: {summary.not_recorded} bars not recorded, "
            f"{summary.undelivered} closed bars not delivered (see the log above)",
            file=sys.stderr,
        )
        return EXIT_INCOMPLETE
    return EXIT_OK


class _Stopper:
    """Ctrl-C / SIGTERM from the moment ``run`` starts: before the App's own handlers
    exist (imports, config, components and local exchange starting) and after they are
    removed (shutdown), a signal asks the App to stop instead of killing the process,
    so the README's promise holds at any time: exit 0 with the summary."""

    def __init__(self) -> None:
        self.app: App | None = None
        self.stopped = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.stopped = True
        if self.app is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.app.stop()
            return
        loop.call_soon_threadsafe(self.app.stop)


_active: _Stopper | None = None


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_Stopper]:
    """Install a :class:`_Stopper` for SIGINT and SIGTERM (or reuse the one installed)."""
    global _active
    if _active is not None or threading.current_thread() is not threading.main_thread():
        yield _active or _Stopper()  # only the main thread may install signal handlers
        return
    stopper = _active = _Stopper()
    previous = {sig: signal.signal(sig, stopper) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stopper
    finally:
        _active = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _positive(text: str) -> float:
    """A finite number of seconds > 0 (``nan``, ``inf`` and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds")
    return value
