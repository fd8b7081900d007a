"""A response head goes out with its body, in one write; nothing is lost or reordered.

Through real uvicorn and real sockets the transport is exercised by every
request of tests/test_crash.py and the integration tests.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from openbeepboop_server.http.single_write_protocol import HeadHoldingTransport

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
