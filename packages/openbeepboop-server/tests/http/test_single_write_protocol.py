"""A response head goes out with its body, in one write; nothing is lost or reordered.

Through real uvicorn and real sockets the transport is exercised by every
request of tests/test_crash.py and the integration tests.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from openbeepboop_server.http.single_write_protocol import (
    ConnectionLimits,
    HeadHoldingTransport,
    OneSendHTTPProtocol,
)

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingTransport:
    """What the socket would see, one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 8000) if name == "sockname" else default


async def _next_turn() -> None:
    await asyncio.sleep(0)


@pytest.mark.anyio
async def test_head_and_body_leave_in_one_write() -> None:
    inner = RecordingTransport()
    transport = HeadHoldingTransport(inner)  # type: ignore[arg-type]
    transport.write(HEAD)
    assert inner.writes == []
    assert transport.get_write_buffer_size() == len(HEAD)
    transport.write(b"{}")
    assert inner.writes == [HEAD + b"{}"]
    await _next_turn()
    assert inner.writes == [HEAD + b"{}"]  # the scheduled flush finds nothing held


@pytest.mark.anyio
async def test_a_head_with_no_body_yet_goes_out_on_the_next_turn() -> None:
    inner = RecordingTransport()
    transport = HeadHoldingTransport(inner)  # type: ignore[arg-type]
    transport.write(HEAD)
    await _next_turn()
    assert inner.writes == [HEAD]
    transport.write(b"chunk")  # a streamed body is not held
    assert inner.writes == [HEAD, b"chunk"]


@pytest.mark.anyio
async def test_close_sends_what_is_held_and_abort_drops_it() -> None:
    inner = RecordingTransport()
    transport = HeadHoldingTransport(inner)  # type: ignore[arg-type]
    transport.write(HEAD)
    transport.close()
    assert inner.writes == [HEAD] and inner.closed
    other = RecordingTransport()
    aborted = HeadHoldingTransport(other)  # type: ignore[arg-type]
    aborted.write(HEAD)
    aborted.abort()
    await _next_turn()
    assert other.writes == [] and other.aborted


@pytest.mark.anyio
async def test_everything_else_is_the_wrapped_transport() -> None:
    inner = RecordingTransport()
    transport = HeadHoldingTransport(inner)  # type: ignore[arg-type]
    assert transport.get_extra_info("sockname") == ("127.0.0.1", 8000)
    assert transport.is_closing() is False


#: The head limit of the served tests below.
HEAD_LIMIT = 4096


async def _echo_length(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that answers with the length of the body it read."""
    assert scope["type"] == "http"
    size, more = 0, True
    while more:
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
async def port() -> AsyncIterator[int]:
    """A running uvicorn on :class:`OneSendHTTPProtocol` with a head limit of :data:`HEAD_LIMIT`."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    limits = ConnectionLimits(max_header_bytes=HEAD_LIMIT)
    config = uvicorn.Config(
        _echo_length,
        http=OneSendHTTPProtocol.configured(limits),
        lifespan="off",
        log_config=None,
        access_log=False,
    )
    server = uvicorn.Server(config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    await asyncio.wait_for(task, 10)


def _head(size: int, first: str = "GET / HTTP/1.1", *extra: str) -> bytes:
    """A request head of exactly ``size`` bytes (padded with an ``x-pad`` header)."""
    lines = "".join(f"{line}\r\n" for line in (first, "host: x", *extra))
    fixed = len(lines) + len("x-pad: \r\n\r\n")
    return f"{lines}x-pad: {'a' * (size - fixed)}\r\n\r\n".encode()


async def _answer(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return int(head.split()[1]), await reader.readexactly(length)


@pytest.mark.anyio
async def test_a_head_up_to_the_limit_is_served_with_its_body_in_the_same_read(
    port: int,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        assert len(_head(HEAD_LIMIT)) == HEAD_LIMIT
        writer.write(_head(HEAD_LIMIT))
        assert await _answer(reader) == (200, b"0")
        # Kept alive: the next head counts from zero; a head at the limit
        # and a large body in one write are not taken for a long head.
        body = b"x" * (20 * HEAD_LIMIT)
        head = _head(HEAD_LIMIT - 1, "POST / HTTP/1.1", f"content-length: {len(body)}")
        writer.write(head + body)
        assert await _answer(reader) == (200, str(len(body)).encode())
        writer.write(_head(HEAD_LIMIT))
        assert await _answer(reader) == (200, b"0")
    finally:
        writer.close()


@pytest.mark.anyio
@pytest.mark.parametrize("kept_alive", [False, True], ids=["first", "kept-alive"])
async def test_a_head_over_the_limit_gets_431_and_the_connection_closes(
    port: int, kept_alive: bool
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        if kept_alive:
            writer.write(_head(HEAD_LIMIT))
            assert await _answer(reader) == (200, b"0")
        writer.write(_head(HEAD_LIMIT + 1))
        status, body = await _answer(reader)
        assert status == 431
        error = json.loads(body)["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "request_headers_too_large"
        assert str(HEAD_LIMIT) in error["message"]
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
    finally:
        writer.close()


@pytest.mark.anyio
async def test_an_endless_head_sent_in_pieces_is_cut_at_the_limit(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(_answer(reader))
    try:
        writer.write(b"GET / HTTP/1.1\r\nhost: x\r\n")
        lines = 0
        while not answer.done() and lines < 100_000:  # header lines until answered
            writer.write(b"x-many: 1\r\n")
            await writer.drain()
            await asyncio.sleep(0)
            lines += 1
        status, body = await answer
        assert status == 431 and b"request_headers_too_large" in body
        assert lines * len(b"x-many: 1\r\n") < 4 * HEAD_LIMIT
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
    finally:
        writer.close()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "request_bytes",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
    ],
)
async def test_bytes_the_parser_refuses_get_a_400_in_the_error_envelope(
    port: int, request_bytes: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request_bytes)
        status, body = await _answer(reader)
        assert status == 400
        error = json.loads(body)["error"]
        assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_http_request")
        assert await asyncio.wait_for(reader.read(), 10) == b""  # closed
    finally:
        writer.close()
