"""``quantcore replay CONFIG --from … --to … [--speed max|N]``: a config's components
fed from the store its recorders wrote (or ``--source``/``--path``), recorders skipped.

Exit 0 when the range was replayed; 2 (one line on stderr) for bad input: a missing
store, a stream the store lacks, a range without bars, a bad option.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from quantcore.config import ConfigError, load_config
from quantcore.logs import configure_logging
from quantcore.replay.settings import ReplaySettings

EXIT_OK, EXIT_BAD_INPUT = 0, 2


def _speed(text: str) -> float | str:
    if text == "max":
        return text
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not (value > 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not 'max' or a positive number")
    return value


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="the YAML config of the run to replay")
    parser.add_argument("--from", dest="start", help="first open time, UTC (YYYY-MM-DD[ HH:MM])")
    parser.add_argument("--to", dest="end", help="replay bars opening before this, UTC")
    parser.add_argument("--speed", type=_speed, help="max (default) or N times market time")
    parser.add_argument(
        "--source", help="store kind: csv, sqlite, postgres or parquet (default: the recorders')"
    )
    parser.add_argument(
        "--path", help="CSV path template, SQLite file or Parquet root (default: the recorders')"
    )
    parser.add_argument("--table", help="SQLite/PostgreSQL table (default: bars)")
    parser.add_argument("--dsn", help="PostgreSQL DSN (default: the postgres recorder's)")
    parser.add_argument("--max-bars", type=int, help="stop after this many bars")


def main(args: argparse.Namespace) -> int:
    from quantcore.app import App
    from quantcore.replay.feed import replay_config

    try:
        config = load_config(args.config)
        settings = (config.replay or ReplaySettings()).merged(
            start=args.start, end=args.end, speed=args.speed,
            source=args.source, path=args.path, table=args.table, dsn=args.dsn,
        )  # fmt: skip
        if args.max_bars is not None and args.max_bars < 1:
            raise ConfigError(f"--max-bars: {args.max_bars} is not a positive integer")
        configure_logging(config.log_level, config.log_file)
        config = replay_config(config, settings)
        app = App(config)
        started = time.monotonic()
        asyncio.run(app.run(max_bars=args.max_bars))
    except ConfigError as exc:
        message = str(exc)
        print(f"quantcore: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return EXIT_OK
    seconds = time.monotonic() - started
    bars = app.feed.stats.bars if app.feed is not None else 0
    print(
        f"quantcore: replayed {bars} bars of {len(config.streams)} streams in {seconds:.1f}s "
        f"({bars / max(seconds, 1e-9):,.0f} bars/s)",
        flush=True,
    )
    return EXIT_OK
