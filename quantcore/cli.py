"""Command line: ``python -m quantcore run CONFIG`` and ``python -m quantcore simulate``.

Exit codes: 0 after a graceful stop (Ctrl-C, SIGTERM, --duration, --max-bars) with
everything recorded; 2 for bad input or a refused start (config, data file, arguments,
port in use, a file that is not quantcore's or is written by another process), reported
as one line on stderr; 3 when the run stopped with recorded data incomplete (bars that
could not be written, or closed bars a subscriber never received).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Sequence

from quantcore.config import ConfigError, load_config
from quantcore.logs import configure_logging

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quantcore", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run the feed and consumers from a YAML config")
    run.add_argument("config", help="YAML config, e.g. config/btc.yaml or config/demo.yaml")
    run.add_argument("--duration", type=_positive, help="stop after this many seconds")
    run.add_argument("--max-bars", type=int, help="stop after this many closed bars")
    from quantcore import plot
    from quantcore.sim.cli import configure_parser

    configure_parser(
        commands.add_parser("simulate", help="serve the Binance-compatible local exchange")
    )
    plot.configure_parser(commands.add_parser("plot", help="candlestick PNG of a recorded CSV"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "plot":
        from quantcore.plot import main as plot

        return plot(args)
    if args.command == "simulate":
        from quantcore.sim.cli import run as simulate

        return asyncio.run(simulate(args))
    return run_command(args.config, args.duration, args.max_bars)


def run_command(config_path: str, duration: float | None, max_bars: int | None) -> int:
    from quantcore.app import App

    try:
        config = load_config(config_path)
        if max_bars is not None and max_bars < 1:
            raise ConfigError(f"--max-bars: {max_bars} is not a positive integer")
        configure_logging(config.log_level, config.log_file)
        app = App(config)
        summary = asyncio.run(app.run(duration=duration, max_bars=max_bars))
    except ConfigError as exc:
        print(f"quantcore: {exc}", file=sys.stderr)
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


def _positive(text: str) -> float:
    """A finite number of seconds > 0 (``nan``, ``inf`` and negatives are refused)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive, finite number of seconds")
    return value
