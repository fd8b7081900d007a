"""A hostile server on a raw loopback socket: huge answers, gzip bombs, trickled heads and bodies.

Each test waits at most :data:`SAFETY_NET` seconds for the client's call: a
call that would hang (or read for ever) without the bounds fails the test
there instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from openbeepboop_node.answer_bounds import MIN_BYTES_PER_SECOND, fetch_answer_cap
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.exceptions import ServerUnavailableError
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.worker import Node
from openbeepboop_schemas import LeaseRef, ReleaseOutcome
from pydantic import ValidationError

KEY = "sk-" + "b" * 40
#: Generous: the calls under test end within about a second.
SAFETY_NET = 30.0
MIB = 1024 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """One scripted answer per connection; counts what it managed to send."""

    handler: Handler | None = None
    sent: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.handler is not None
        try:
            await read_request(reader)
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the node hung up: what these tests want
        finally:
            writer.close()

    async def write(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        self.sent += len(data)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


@pytest.fixture
async def raw() -> AsyncIterator[tuple[RawServer, str]]:
    server = RawServer()
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    yield server, f"http://127.0.0.1:{port}"
    listener.close()


def client_for(url: str, **options: float) -> QueueClient:
    """Short allowances: a connect allowance and read margin of half a second each."""
    settings = {"fetch_wait": 0.0, "read_margin": 0.5, "connect_timeout": 0.5, **options}
    return QueueClient(url, KEY, "node-1", **settings)  # type: ignore[arg-type]


async def within_safety_net(call: Awaitable[object]) -> object:
    return await asyncio.wait_for(call, SAFETY_NET)


def head(length: int | None = None, extra: str = "") -> bytes:
    framing = "transfer-encoding: chunked" if length is None else f"content-length: {length}"
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{framing}\r\n{extra}\r\n"
    ).encode()


# -- size ---------------------------------------------------------------------


async def test_a_fetch_answer_past_what_its_leases_can_hold_is_not_read(
    raw: tuple[RawServer, str],
) -> None:
    server, url = raw
    endless = 64 * MIB  # a stand-in for "gigabytes": the node must stop long before

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, head() + b"1\r\n[\r\n")
        chunk = b" " * MIB
        while server.sent < endless:
            await server.write(writer, f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        await server.write(writer, b"1\r\n]\r\n0\r\n\r\n")

    server.handler = flood
    client = client_for(url, max_lease_bytes=MIB)
    try:
        with pytest.raises(ServerUnavailableError, match="too large an answer") as caught:
            await within_safety_net(client.fetch(["m"], 1, 0))
    finally:
        await client.aclose()
    assert f"{fetch_answer_cap(1, MIB):,} bytes" in str(caught.value)
    assert server.sent < endless / 2  # the node hung up once past its cap


async def test_a_gzip_bomb_is_cut_after_decompression(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    # ~64 KB on the wire, 64 MiB once inflated: a valid (empty) fetch answer.
    bomb = gzip.compress(b"[" + b" " * (64 * MIB) + b"]", compresslevel=9)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, head(len(bomb), "content-encoding: gzip\r\n") + bomb)

    server.handler = answer
    client = client_for(url, max_lease_bytes=MIB)
    try:
        with pytest.raises(ServerUnavailableError, match="too large an answer"):
            await within_safety_net(client.fetch(["m"], 1, 0))
    finally:
        await client.aclose()


def test_max_lease_bytes_comes_from_the_node_config(
    make_config: Callable[..., NodeConfig],
) -> None:
    node = Node(make_config(max_lease_bytes=2 * MIB), version="test")
    assert node.client.max_lease_bytes == 2 * MIB
    with pytest.raises(ValidationError, match="max_lease_bytes"):
        make_config(max_lease_bytes=10)


async def test_a_huge_heartbeat_answer_is_not_read(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    body = json.dumps({"extended": [], "lost": [], "padding": "x" * (8 * MIB)}).encode()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, head(len(body)) + body)

    server.handler = answer
    client = client_for(url)
    try:
        with pytest.raises(ServerUnavailableError, match="too large an answer"):
            await within_safety_net(client.heartbeat([LeaseRef(job_id="j", lease_token="t")]))
    finally:
        await client.aclose()


# -- time ---------------------------------------------------------------------


def calls(client: QueueClient) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "fetch": lambda: client.fetch(["m"], 1, 0),
        "submit": lambda: client.submit([ReleaseOutcome(job_id="j", lease_token="t")]),
        "heartbeat": lambda: client.heartbeat([LeaseRef(job_id="j", lease_token="t")]),
    }


@pytest.mark.parametrize("call", ["fetch", "submit", "heartbeat"])
@pytest.mark.parametrize("part", ["head", "body"])
async def test_a_trickled_answer_is_cut_off(
    raw: tuple[RawServer, str], call: str, part: str
) -> None:
    server, url = raw
    stopped = asyncio.Event()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # One byte at a time, each well inside the half-second read timeout.
        if part == "head":
            await server.write(writer, b"HTTP/1.1 200 OK\r\nx-slow: ")
        else:
            await server.write(writer, head(1_000_000))
        try:
            while True:
                await server.write(writer, b"a")
                await asyncio.sleep(0.05)
        finally:
            stopped.set()

    server.handler = trickle
    client = client_for(url)
    try:
        with pytest.raises(ServerUnavailableError, match="no whole answer within 1 s"):
            await within_safety_net(calls(client)[call]())
    finally:
        await client.aclose()
    await asyncio.wait_for(stopped.wait(), SAFETY_NET)  # the node hung up


async def test_an_answer_that_keeps_moving_is_read_to_its_end(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    lease = {
        "job_id": "job-1",
        "lease_token": "tok",
        "lease_expires_at": 1e10,
        "lease_seconds": 300,
        "attempt": 1,
        "model": "m",
        "request": {"model": "m", "messages": [{"role": "user", "content": "x" * (2 * MIB)}]},
    }
    body = json.dumps([lease]).encode()
    step = MIN_BYTES_PER_SECOND  # each step earns a second; it takes a tenth

    async def steady(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await server.write(writer, head(len(body)))
        for start in range(0, len(body), step):
            await server.write(writer, body[start : start + step])
            await asyncio.sleep(0.1)

    server.handler = steady
    client = client_for(url)
    try:
        # ~3 s in all, past the first second allowed: the bytes moving earn the rest.
        (got,) = await within_safety_net(client.fetch(["m"], 1, 0))  # type: ignore[misc]
    finally:
        await client.aclose()
    assert got.job_id == "job-1"


async def test_a_large_delivery_earns_time_for_its_upload(raw: tuple[RawServer, str]) -> None:
    server, url = raw
    outcome = ReleaseOutcome(job_id="j" * 128, lease_token="t" * 128)
    outcomes = [outcome] * 1000  # ~270 KB: about four seconds at the slowest rate
    acks = json.dumps({"acks": [{"job_id": "j" * 128, "ack": "accepted"}] * 1000}).encode()

    async def slow_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The head dribbles in over ~2 s: past the base second, inside what the upload earned.
        for byte in b"HTTP/1.1 200 OK\r\nx-pad: " + b"p" * 20:
            await server.write(writer, bytes([byte]))
            await asyncio.sleep(0.05)
        await server.write(writer, b"\r\n" + head(len(acks))[len(b"HTTP/1.1 200 OK\r\n") :] + acks)

    server.handler = slow_head
    client = client_for(url)
    try:
        answer = await within_safety_net(client.submit(outcomes))
    finally:
        await client.aclose()
    assert len(answer) == 1000  # type: ignore[arg-type]
