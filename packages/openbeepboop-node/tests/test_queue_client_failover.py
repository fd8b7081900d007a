"""A node given several server URLs, over real loopback HTTP: which answers move it on."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest
from fake_queue import DROP, LoopbackServer, Received, Reply, always
from openbeepboop_node import queue_client
from openbeepboop_node.exceptions import KeyRejectedError, ServerUnavailableError
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_schemas import LeaseRef

KEY = "sk-" + "q" * 40
FETCH = "/internal/queue/fetch"


def closed_url() -> str:
    """A loopback URL where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def first() -> Iterator[LoopbackServer]:
    with LoopbackServer(always(Reply(200, []))) as loopback:
        yield loopback


@pytest.fixture
def second() -> Iterator[LoopbackServer]:
    with LoopbackServer(always(Reply(200, []))) as loopback:
        yield loopback


@pytest.fixture
async def client(first: LoopbackServer, second: LoopbackServer) -> AsyncIterator[QueueClient]:
    queue = QueueClient([first.url, second.url], KEY, "node-1", fetch_wait=0)
    yield queue
    await queue.aclose()


async def test_calls_go_to_the_first_url_while_it_answers(
    first: LoopbackServer, second: LoopbackServer, client: QueueClient
) -> None:
    for _ in range(3):
        assert await client.fetch(["m"], 1, 0) == []
    assert len(first.received) == 3
    assert second.received == []


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_a_gateway_error_sends_the_same_call_to_the_next_url_at_once(
    first: LoopbackServer, second: LoopbackServer, client: QueueClient, status: int
) -> None:
    first.respond = always(Reply(status, text="no upstream"))
    assert await client.fetch(["m"], 2, 0) == []
    assert [r.path for r in first.received] == [FETCH]
    assert [r.json()["max_jobs"] for r in second.received] == [2]  # the same body
    # The node stays on the second URL: the first hears nothing more.
    assert await client.fetch(["m"], 1, 0) == []
    assert len(first.received) == 1
    assert len(second.received) == 2
    assert client.server_url == second.url


async def test_a_dropped_connection_moves_to_the_next_url(
    first: LoopbackServer, second: LoopbackServer, client: QueueClient
) -> None:
    first.respond = always(DROP)
    assert await client.fetch(["m"], 1, 0) == []
    assert client.server_url == second.url
    assert len(second.received) == 1


async def test_a_refused_connection_moves_to_the_next_url(second: LoopbackServer) -> None:
    queue = QueueClient([closed_url(), second.url], KEY, "node-1", fetch_wait=0)
    try:
        assert await queue.fetch(["m"], 1, 0) == []
    finally:
        await queue.aclose()
    assert queue.server_url == second.url


async def test_a_timeout_moves_to_the_next_url(second: LoopbackServer) -> None:
    let_go = threading.Event()

    def stall(request: Received) -> Reply:
        let_go.wait(30)
        return Reply(200, [])

    with LoopbackServer(stall) as hung:
        queue = QueueClient([hung.url, second.url], KEY, "node-1", fetch_wait=0, read_margin=0.3)
        try:
            assert await queue.fetch(["m"], 1, 0) == []
        finally:
            let_go.set()
            await queue.aclose()
    assert queue.server_url == second.url
    assert len(second.received) == 1


@pytest.mark.parametrize("status", [500, 429, 408])
async def test_other_server_errors_do_not_move_the_node(
    first: LoopbackServer, second: LoopbackServer, client: QueueClient, status: int
) -> None:
    # A 500 comes from the replica's own code and the shared database; 429 and
    # 408 ask to slow down. Another replica would answer the same.
    first.respond = always(Reply(status, text="busy"))
    with pytest.raises(ServerUnavailableError):
        await client.fetch(["m"], 1, 0)
    assert second.received == []
    assert client.server_url == first.url


async def test_a_rejected_key_is_final_on_any_url(
    first: LoopbackServer, second: LoopbackServer, client: QueueClient
) -> None:
    first.respond = always(Reply(401, {"error": {"message": "bad key", "type": "x"}}))
    with pytest.raises(KeyRejectedError):
        await client.fetch(["m"], 1, 0)
    assert second.received == []


async def test_when_every_url_fails_the_call_fails_with_the_last_reason(
    first: LoopbackServer, second: LoopbackServer, client: QueueClient
) -> None:
    first.respond = always(DROP)
    second.respond = always(Reply(503, text="down", headers={"Retry-After": "7"}))
    with pytest.raises(ServerUnavailableError, match="answered 503") as failure:
        await client.fetch(["m"], 1, 0)
    assert failure.value.retry_after == 7  # the caller's backoff honours it
    assert len(first.received) == 1
    assert len(second.received) == 1
    # Each URL was tried once; the pool wrapped around to the first, in order.
    first.respond = always(Reply(200, []))
    assert await client.fetch(["m"], 1, 0) == []
    assert len(first.received) == 2
    assert len(second.received) == 1


async def test_a_heartbeat_leaves_a_hung_replica_while_the_leases_still_hold(
    second: LoopbackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica that takes the call and never answers (stopped, frozen) is left after a
    share of the lease, not after the connect and read allowance (45 s by default): the
    other replica extends the leases before they expire."""
    monkeypatch.setattr(queue_client, "MIN_LEASE_EXCHANGE_SECONDS", 0.2, raising=False)
    lease = {
        "job_id": "job-1",
        "lease_token": "tok",
        "lease_expires_at": 1e10,
        "lease_seconds": 2.0,
        "attempt": 1,
        "model": "m",
        "request": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    let_go = threading.Event()

    def answer_then_hang(request: Received) -> Reply:
        if request.path == FETCH:
            return Reply(200, [lease])
        let_go.wait(60)
        return Reply(200, {})

    second.respond = always(Reply(200, {"lease_seconds": 2.0, "extended": ["job-1"]}))
    with LoopbackServer(answer_then_hang) as hung:
        # A node's own long-poll wait: every read may take it, plus the margin (40 s).
        queue = QueueClient([hung.url, second.url], KEY, "node-1", fetch_wait=25)
        try:
            [held] = await queue.fetch(["m"], 1, 0)
            ref = LeaseRef(job_id=held.job_id, lease_token=held.lease_token)
            # Without the lease's bound this waits 40 s for the hung replica.
            beat = await asyncio.wait_for(queue.heartbeat([ref]), timeout=10)
        finally:
            let_go.set()
            await queue.aclose()
    assert beat.extended == ["job-1"]
    assert queue.server_url == second.url
