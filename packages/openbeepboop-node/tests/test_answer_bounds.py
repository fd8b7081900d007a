"""A hostile server on a raw loopback socket: huge answers and gzip bombs.

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
from openbeepboop_node.answer_bounds import fetch_answer_cap
from openbeepboop_node.config import NodeConfig
from openbeepboop_node.exceptions import ServerUnavailableError
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.worker import Node
from openbeepboop_schemas import LeaseRef
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
    """A client that long-polls for nothing."""
    settings = {"fetch_wait": 0.0, "read_margin": 0.5, **options}
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
