"""unicorn-binance-websocket-api 2.16.1 as a peer in bench/end_to_end.py: kline_1m of btcusdt.

A ``BinanceWebSocketApiManager`` (``websocket_base_uri`` pointed at the local blast server,
no update check: that one asks GitHub) with one stream decoded to a dict
(``output="dict"``, orjson) and handed to a ``process_stream_data`` callback, which keeps
every closed bar and appends one CSV line per closed bar (close, high, low, open, volume,
quote volume, open time; the decimal strings as received). The manager runs each stream
in its own thread and event loop; the CPU time counted is the whole process's. The
process leaves with ``os._exit`` after printing its figures: ``stop_manager()`` does not
end a stream that receives nothing more (see the end of :func:`main`).

Run with the peer venv's python (not a quantcore dependency):
    /tmp/peers/bin/python bench/peers/unicorn_client.py --ws URL --rest URL \
        --frames N --csv PATH
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any

from _peer import Probe, open_csv, parse_args, stamp
from unicorn_binance_websocket_api import (  # type: ignore[import-untyped]
    BinanceWebSocketApiManager,
)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    probe = Probe(args.frames)
    csv = open_csv(args.csv)
    bars: list[dict[str, Any]] = []
    done = threading.Event()

    def on_frame(message: dict[str, Any]) -> None:
        if not probe.frames:
            probe.start()
        probe.frames += 1
        k = message["data"]["k"]
        if k["x"]:
            bars.append(k)
            csv.write(f"{k['c']},{k['h']},{k['l']},{k['o']},{k['v']},{k['q']},{stamp(k['t'])}\n")
            probe.bars += 1
            if probe.done:
                probe.finish()
                done.set()

    manager = BinanceWebSocketApiManager(
        exchange="binance.com",
        websocket_base_uri=args.ws,
        warn_on_update=False,
        disable_colorama=True,
    )
    try:
        manager.create_stream(
            channels="kline_1m",
            markets="btcusdt",
            output="dict",
            process_stream_data=on_frame,
        )
        done.wait(args.timeout)
    finally:
        manager.stop_manager()
        csv.close()
    probe.report()
    # stop_manager() only sets flags: a stream past its first 10 frames waits in recv()
    # without a timeout, and the blast sends nothing after its last frame, so that thread
    # (not a daemon) would keep the process alive for ever. Leave once the figures are out.
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(1.0)
    if threading.active_count() > 1:
        print(
            "unicorn: stream thread still in recv() after stop_manager(); exiting", file=sys.stderr
        )
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
