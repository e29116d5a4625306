"""The direct transports' delivery contract (picows, websockets), against a real socket on 127.0.0.1.

Every message in order (also those that arrived before ``run``, fragmented ones, and
frames cut anywhere by TCP), pings answered, a failing callback ends ``run`` with its
own exception, ``detach`` ends it quietly, and a closed connection or a protocol error
is :class:`SocketClosed`. Each test runs with picows and websockets' public ``recv`` loop
(the websockets transport, public API only); CI runs this file again on the lowest
websockets setup.cfg allows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import random
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvloop
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from quantcore.app import App
from quantcore.cli import loop_factory
from quantcore.events import BarEvent
from quantcore.feeds.binance.codec import KlineCodec, KlineParseError
from quantcore.feeds.binance.picows_socket import PicowsSocket
from quantcore.feeds.binance.stream_socket import SocketClosed, StreamSocket
from quantcore.feeds.binance.transport import PublicSocket, open_socket
from quantcore.sim import LocalExchange, ReplaySource
from tests.harness import app_config, csv_rows, truth_row
from tests.paths import REPO, REST_BTC

Script = Callable[[ServerConnection], Awaitable[None]]
Opener = Callable[[str, list[str], int], Awaitable[StreamSocket]]

_OPENERS: dict[str, Opener] = {"public": PublicSocket.open, "picows": PicowsSocket.open}


@pytest.fixture(params=sorted(_OPENERS))
def opener(request: pytest.FixtureRequest) -> Opener:
    """Every direct transport: picows, and websockets' public ``recv`` loop."""
    return _OPENERS[request.param]


@asynccontextmanager
async def _open(
    opener: Opener, script: Script, max_queue: int = 1000
) -> AsyncIterator[StreamSocket]:
    async def handler(ws: ServerConnection) -> None:
        await script(ws)
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        socket = await opener(f"ws://127.0.0.1:{port}/", ["btcusdt@kline_1m"], max_queue)
        try:
            yield socket
        finally:
            await socket.close()


async def _run_until(socket: StreamSocket, count: int) -> list[bytes]:
    got: list[bytes] = []

    def on_frame(message: bytes) -> None:
        got.append(message)
        if len(got) == count:
            socket.detach()

    await asyncio.wait_for(socket.run(on_frame), 5)
    return got


async def test_every_message_in_order_including_early_and_fragmented_ones(opener: Opener) -> None:
    """Messages that arrive before ``run`` are held, up to ``max_queue``; then the
    socket stops reading, so the server's sends stall (TCP back-pressure), and every
    message still arrives once ``run`` starts."""
    pad = "x" * 20_000
    sent = 0

    async def script(ws: ServerConnection) -> None:
        nonlocal sent
        await ws.send("first")
        await ws.send(["frag", "mented"])  # one message in three frames
        await ws.send(b"\x00binary")
        for i in range(2000):
            await ws.send(f'{{"n":{i},"pad":"{pad}"}}')
            sent += 1

    async with _open(opener, script, max_queue=50) as socket:
        await asyncio.sleep(0.3)  # what arrives before run() is held, then reading pauses
        stalled_at = sent
        got = await _run_until(socket, 2003)
    assert 50 <= stalled_at < 2000, stalled_at
    assert got[:3] == [b"first", b"fragmented", b"\x00binary"]
    assert got[3:] == [f'{{"n":{i},"pad":"{pad}"}}'.encode() for i in range(2000)]


async def test_a_failing_callback_ends_run_with_its_exception(
    opener: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(ws: ServerConnection) -> None:
        await asyncio.sleep(0.05)
        for i in range(5):
            await ws.send(str(i))

    seen: list[bytes] = []

    def on_frame(message: bytes) -> None:
        seen.append(message)
        if message == b"2":
            raise LookupError("no such stream")

    caplog.set_level(logging.ERROR)
    async with _open(opener, script) as socket:
        with pytest.raises(LookupError, match="no such stream"):
            await asyncio.wait_for(socket.run(on_frame), 5)
    assert seen == [b"0", b"1", b"2"], "nothing is delivered after the failure"
    assert not [r for r in caplog.records if "data_received" in r.getMessage()], caplog.text


async def test_a_closed_connection_is_socket_closed(opener: Opener) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send("last")
        await ws.close(1001, "going away")

    got: list[bytes] = []
    async with _open(opener, script) as socket:
        with pytest.raises(SocketClosed, match="1001"):
            await asyncio.wait_for(socket.run(got.append), 5)
    assert got == [b"last"]


_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def _frame(payload: bytes, opcode: int = 0x1, fin: bool = True, mask: bool = False) -> bytes:
    """One server frame, by RFC 6455 5.2 (7-, 16- or 64-bit length as the size needs)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    bit = 0x80 if mask else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + size.to_bytes(8, "big")
    return head + (b"\0\0\0\0" + payload if mask else payload)


@asynccontextmanager
async def _raw_server(
    chunks: list[bytes], replies: list[bytes], pause: float = 0.0
) -> AsyncIterator[str]:
    """A hand-made WebSocket server: answers the handshake, then writes ``chunks`` as
    given (the first one right behind the 101 response), and keeps what the client sends."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        response = (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        writer.write(response + chunks[0])
        for chunk in chunks[1:]:
            await writer.drain()
            await asyncio.sleep(pause)
            writer.write(chunk)
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                replies.append(data)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.close()


def _split(stream: bytes, seed: int) -> list[bytes]:
    """The stream in pieces of 1 to 700 bytes, many of them single bytes."""
    rnd = random.Random(seed)
    pieces, pos = [], 0
    while pos < len(stream):
        step = 1 if rnd.random() < 0.3 else rnd.randint(2, 700)
        pieces.append(stream[pos : pos + step])
        pos += step
    return pieces


async def test_frames_of_every_length_form_split_anywhere_arrive_whole(opener: Opener) -> None:
    """7-, 16- and 64-bit lengths, the first frame in the handshake's own packet, the
    stream cut into pieces down to single bytes: every message byte for byte, in order."""
    messages = [b"x" * n for n in (0, 5, 125, 126, 300, 65_535, 65_536, 70_000)]
    messages += [f'{{"n":{i}}}'.encode() for i in range(300)]
    stream = b"".join(_frame(m) for m in messages)
    replies: list[bytes] = []
    for seed in (1, 2):
        pieces = _split(stream, seed)
        async with _raw_server([pieces[0], *pieces[1:]], replies) as url:
            socket = await opener(url, ["btcusdt@kline_1m"], 1000)
            try:
                got = await _run_until(socket, len(messages))
            finally:
                await socket.close()
        assert got == messages, seed


async def test_pings_are_answered_between_data_frames(opener: Opener) -> None:
    stream = _frame(b"a") + _frame(b"hello", opcode=0x9) + _frame(b"b")
    replies: list[bytes] = []
    async with _raw_server([stream[:9], stream[9:]], replies, pause=0.05) as url:
        socket = await opener(url, ["btcusdt@kline_1m"], 1000)
        try:
            assert await _run_until(socket, 2) == [b"a", b"b"]
            await asyncio.sleep(0.1)
        finally:
            await socket.close()
    sent = b"".join(replies)
    assert sent[:2] == bytes([0x8A, 0x80 | 5]), sent  # a masked pong, FIN, 5 bytes
    key = sent[2:6]
    assert bytes(b ^ key[i % 4] for i, b in enumerate(sent[6:11])) == b"hello"


async def test_a_masked_server_frame_is_a_protocol_error(opener: Opener) -> None:
    """A masked frame from the server ends the connection with 1002 (RFC 6455 5.1)."""
    stream = _frame(b"ok") + _frame(b"bad", mask=True) + _frame(b"never")
    got: list[bytes] = []
    async with _raw_server([stream], []) as url:
        socket = await opener(url, ["btcusdt@kline_1m"], 1000)
        try:
            with pytest.raises(SocketClosed, match="1002"):
                await asyncio.wait_for(socket.run(got.append), 5)
        finally:
            await socket.close()
    assert got == [b"ok"]


@pytest.mark.parametrize(
    ("stream", "why"),
    [
        (_frame(b"lone", opcode=0x0), "a continuation without a message to continue"),
        (_frame(b"a", fin=False) + _frame(b"b"), "a new message inside a fragmented one"),
        (bytes([0xC1, 3]) + b"bad", "a reserved bit without a negotiated extension"),
    ],
)
async def test_a_frame_out_of_place_is_a_protocol_error(
    opener: Opener, stream: bytes, why: str
) -> None:
    """RFC 6455 5.2 and 5.4: the connection ends (1002), nothing of it is delivered."""
    got: list[bytes] = []
    async with _raw_server([_frame(b"ok") + stream + _frame(b"never")], []) as url:
        socket = await opener(url, ["btcusdt@kline_1m"], 1000)
        try:
            with pytest.raises(SocketClosed, match="1002"):
                await asyncio.wait_for(socket.run(got.append), 5)
        finally:
            await socket.close()
    assert got == [b"ok"], why


async def test_a_fragmented_message_cut_anywhere_arrives_whole(opener: Opener) -> None:
    """Binance sends no fragments, but a message in several frames (text, then
    continuations, a ping between them) is one message, also split down to single bytes."""
    parts = [b'{"part":1,', b"", b'"x":"' + b"y" * 70_000 + b'",', b'"end":true}']
    stream = _frame(parts[0], fin=False)
    stream += _frame(parts[1], opcode=0x0, fin=False) + _frame(b"p", opcode=0x9)
    stream += _frame(parts[2], opcode=0x0, fin=False) + _frame(parts[3], opcode=0x0)
    stream += _frame(b"after")
    async with _raw_server(_split(stream, 3), []) as url:
        socket = await opener(url, ["btcusdt@kline_1m"], 1000)
        try:
            got = await _run_until(socket, 2)
        finally:
            await socket.close()
    assert got == [b"".join(parts), b"after"]


_KLINE = (
    b'{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":1700000000123,"s":"BTCUSDT",'
    b'"k":{"t":1699999980000,"T":1700000039999,"s":"BTCUSDT","i":"1m","f":1,"L":2,'
    b'"o":"37000.10","c":"37001.20","h":"37002.30","l":"36999.40","v":"1.5","n":2,'
    b'"x":false,"q":"55501.5","V":"0.5","Q":"18500.5","B":"0"}}}'
)


async def test_text_that_is_not_utf8_reaches_the_codec_which_refuses_it(opener: Opener) -> None:
    """A text frame whose bytes are not UTF-8 (here in a field the codec otherwise skips)
    does not end the connection: it is handed over like any frame, and the codec refuses
    it as not a kline, which the feed counts as malformed and never records."""
    bad = _KLINE.replace(b'"B":"0"', b'"B":"\xff\xfe"')
    stream = _frame(_KLINE) + _frame(bad) + _frame(b'{"n":"\xc3\xa9"}')
    async with _raw_server([stream], []) as url:
        socket = await opener(url, ["btcusdt@kline_1m"], 1000)
        try:
            got = await _run_until(socket, 3)
        finally:
            await socket.close()
    assert got == [_KLINE, bad, b'{"n":"\xc3\xa9"}']
    codec = KlineCodec()
    assert codec.parse(_KLINE).decimals.close == "37001.20"
    with pytest.raises(KlineParseError, match="not UTF-8"):
        codec.parse(bad)
    with pytest.raises(KlineParseError, match="no kline event"):
        codec.parse(got[2])  # valid UTF-8 beyond ASCII is only "not a kline"


async def test_close_runs_the_closing_handshake(opener: Opener) -> None:
    """``close`` ends the connection with a close frame (1000), not by dropping TCP."""
    codes: list[int | None] = []

    async def handler(ws: ServerConnection) -> None:
        await ws.send("one")
        await ws.wait_closed()
        codes.append(ws.protocol.close_code)  # the connection's own close_code: from 15.0

    async with serve(handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        socket = await opener(f"ws://127.0.0.1:{port}/", ["btcusdt@kline_1m"], 10)
        assert await _run_until(socket, 1) == [b"one"]
        await socket.close()
        for _ in range(100):
            if codes:
                break
            await asyncio.sleep(0.02)
    assert codes == [1000]


async def test_detach_ends_a_waiting_run_and_delivers_nothing_more(opener: Opener) -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send("one")
        await asyncio.sleep(0.3)
        await ws.send("two")

    got: list[bytes] = []
    async with _open(opener, script) as socket:
        run = asyncio.ensure_future(socket.run(got.append))
        await asyncio.sleep(0.1)
        socket.detach()
        await asyncio.wait_for(run, 1)
        await asyncio.sleep(0.4)
    assert got == [b"one"]
    assert run.result() is None


async def test_a_cancelled_run_stays_cancelled(opener: Opener) -> None:
    """Only :meth:`detach` ends ``run`` quietly; the supervisor's cancellation goes on."""

    async def script(ws: ServerConnection) -> None:
        await ws.send("one")

    async with _open(opener, script) as socket:
        run = asyncio.ensure_future(socket.run(lambda message: None))
        await asyncio.sleep(0.1)
        socket.detach()
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(run, 1)


async def _opened_reads_hello(transport: str, script: Any) -> StreamSocket:
    """``open_socket(transport, …)`` against a server running ``script``: its first
    message arrives; the closed socket is returned for its type."""
    async with serve(script, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        socket = await open_socket(
            transport,  # type: ignore[arg-type]
            f"ws://127.0.0.1:{port}/",
            ["btcusdt@kline_1m"],
            100,  # type: ignore[arg-type]
        )
        try:
            assert await _run_until(socket, 1) == [b"hello"]
        finally:
            await socket.close()
    return socket


async def test_the_websockets_transport_reads_through_the_public_recv_loop() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send("hello")

    socket = await _opened_reads_hello("websockets", script)
    assert isinstance(socket, PublicSocket)


async def test_the_picows_transport_opens_a_picows_socket() -> None:
    async def script(ws: ServerConnection) -> None:
        await ws.send("hello")

    socket = await _opened_reads_hello("picows", script)
    assert isinstance(socket, PicowsSocket)


@asynccontextmanager
async def _corrupting_relay(upstream: str, injected: list[bytes]) -> AsyncIterator[str]:
    """A WebSocket server in front of the local exchange: relays its frames unchanged,
    but sends the first closed bar twice, first with another close price and a field
    whose bytes are not UTF-8 (a field the codec otherwise skips), then as it is."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        path = request.split(b" ", 2)[1].decode()
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        async with connect(upstream + path.lstrip("/"), compression=None) as ws:
            relay = asyncio.ensure_future(_relay(ws, writer, injected))
            with contextlib.suppress(ConnectionError):
                await reader.read(65536)  # the client's close (or its end)
            relay.cancel()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.close()


async def _relay(ws: ClientConnection, writer: asyncio.StreamWriter, injected: list[bytes]) -> None:
    while True:
        message = await ws.recv(False)
        assert isinstance(message, bytes)
        if not injected and b'"x":true' in message:
            frame = orjson.loads(message)
            k = frame["data"]["k"]
            assert k["c"] != k["l"]
            k["c"] = k["l"]
            bad = orjson.dumps(frame).replace(b'"k":{', b'"k":{"Z":"\xff\xfe",', 1)
            injected.append(bad)
            writer.write(_frame(bad))
        writer.write(_frame(message))
        await writer.drain()


@pytest.mark.parametrize("direct", ["picows", "websockets"])
async def test_a_closed_bar_that_is_not_utf8_is_counted_malformed_never_recorded(
    tmp_path: Path, direct: str
) -> None:
    """End to end with ``feed.transport: picows`` and ``websockets`` (the path the
    installed websockets takes): the corrupted copy arrives first; the CSV still holds
    the exchange's bars exactly, and the feed counted one malformed frame."""
    template = str(tmp_path / "{symbol}_{interval}.csv")
    injected: list[bytes] = []
    source = ReplaySource.from_file(REST_BTC)
    async with LocalExchange([source], updates_per_bar=3) as exchange:
        async with _corrupting_relay(exchange.ws_url, injected) as relay_url:
            config = app_config(exchange, template, feed={"transport": direct})
            config = replace(config, feed=replace(config.feed, ws_url=relay_url))  # type: ignore[arg-type]
            app = App(config)
            await app.run(max_bars=10)
        truth = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=0)]
    assert len(injected) == 1
    rows = csv_rows(tmp_path / "BTCUSDT_1m.csv")
    assert rows == truth[:10]
    assert app.feed is not None and app.feed.stats.malformed == 1, app.feed.stats.summary()


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key (openssl)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_picows_reads_over_tls_and_verifies_the_server(
    certificate: tuple[Path, Path],
) -> None:
    """``wss:`` goes through picows' ``ssl_context``: a certificate the system does not
    trust is refused; with a context that trusts it, frames arrive."""
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)

    async def handler(ws: ServerConnection) -> None:
        await ws.send("over tls")
        await ws.wait_closed()

    async with serve(handler, "127.0.0.1", 0, ssl=server_context) as server:
        url = f"wss://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
        with pytest.raises(ssl.SSLCertVerificationError):
            await PicowsSocket.open(url, ["btcusdt@kline_1m"], 10)
        trusting = ssl.create_default_context(cafile=str(cert))
        socket = await PicowsSocket.open(url, ["btcusdt@kline_1m"], 10, ssl_context=trusting)
        try:
            got = await _run_until(socket, 1)
        finally:
            await socket.close()
    assert got == [b"over tls"]


def test_runtime_loop_uvloop_records_the_demo_on_picows(tmp_path: Path) -> None:
    """``runtime.loop: uvloop`` with ``feed.transport: picows``: ``quantcore run`` records
    consecutive bars and exits 0; the loop factory is uvloop's (asyncio's own: None)."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["feed"]["transport"] = "picows"
    config["runtime"] = {"loop": "uvloop"}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-m", "quantcore", "run", str(path), "--max-bars", "3"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = csv_rows(tmp_path / "data" / "demo" / "BTCUSDT_1m.csv")
    minutes = [datetime.strptime(row[6], "%Y-%m-%d %H:%M:%S") for row in rows]
    assert len(rows) == 3 and all(b - a == timedelta(minutes=1) for a, b in pairwise(minutes))
    assert "bars recorded=3" in result.stdout.splitlines()[-1]
    assert loop_factory("uvloop") is uvloop.new_event_loop
    assert loop_factory("asyncio") is None


async def test_updates_nobody_subscribes_to_build_no_bar_event(
    tmp_path: Path, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CSV-only recorder (nobody subscribes to ``bar.partial``): in-progress updates
    are decoded and keep the stream's state, but become no BarEvent; only closed bars are
    converted, and the CSV holds the exchange's bars exactly, in order, none missing."""
    template = str(tmp_path / "{symbol}_{interval}.csv")
    converted: list[BarEvent] = []
    convert = KlineCodec.convert

    def spy(codec: KlineCodec, *args: Any) -> BarEvent:
        bar = convert(codec, *args)
        converted.append(bar)
        return bar

    monkeypatch.setattr(KlineCodec, "convert", spy)
    async with LocalExchange([ReplaySource.from_file(REST_BTC)], updates_per_bar=5) as exchange:
        consumers = [{"class": "csv", "params": {"path": template}}]
        feed = {"transport": transport, "stall_timeout": 2}
        app = App(app_config(exchange, template, feed=feed, consumers=consumers))
        await app.run(max_bars=20)
        truth = [truth_row(k) for k in exchange.closed_klines("BTCUSDT", "1m", since_ms=0)]
    assert csv_rows(tmp_path / "BTCUSDT_1m.csv") == truth[:20]
    assert app.feed is not None
    stats = app.feed.stats
    assert stats.partials >= 20 * 3 and not stats.malformed, stats.summary()
    assert converted and all(bar.closed for bar in converted), len(converted)
