"""The lease watch: a cancel reaches a running job at once, not at the next heartbeat.

Against the fake queue (loopback HTTP) and the real stand-in LLM via LiteLLM.
The fake's lease is 300 s, so the first heartbeat is 100 s away: an abort
seen within the tests' deadlines came through the watch.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from conditions import wait_for
from fake_queue import NODE_KEY, WATCH, FakeQueue, LoopbackServer, Received, Reply
from openbeepboop_node.backoff import Backoff
from openbeepboop_node.exceptions import ServerUnavailableError
from openbeepboop_node.lease_watch import LeaseWatcher
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_node.worker import Node
from openbeepboop_schemas import LeaseRef
from openbeepboop_testkit.standin import StandinLLM

LONG_LEASE_SECONDS = 300.0


async def start(node: Node) -> asyncio.Task[object]:
    return asyncio.create_task(node.run())


async def test_a_watch_answer_aborts_the_llm_call_and_frees_the_slot(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node]
) -> None:
    fake.lease_seconds = LONG_LEASE_SECONDS
    llm.configure(delay=120.0)
    job_id = fake.add_job("long")
    node = make_node(concurrency=1)
    task = await start(node)
    await wait_for(lambda: fake.watches, what="the running job to be watched")
    assert [ref["job_id"] for ref in fake.watches[0]["leases"]] == [job_id]

    fake.cancelled.add(job_id)

    await wait_for(lambda: node.running_jobs == 0, what="the job to be aborted")
    # The LLM call itself was abandoned: the provider saw the connection close.
    await wait_for(
        lambda: llm.calls_for("long")[0].hung_up_at is not None, what="the LLM call to be closed"
    )
    assert node.summary.aborted == 1
    assert fake.heartbeats == []  # it was the watch, not a heartbeat
    # The one slot is free: the next job runs at once.
    llm.configure(delay=0.0)
    other = fake.add_job("next")
    await wait_for(lambda: other in fake.results(), what="the next job")
    node.stop()
    await task
    assert job_id not in fake.outcomes
    assert llm.calls_for("long")[0].answered_at is None


async def test_an_old_server_without_the_watch_leaves_cancels_to_the_heartbeat(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="openbeepboop_node.lease_watch")
    fake.watch_status = 404
    fake.lease_seconds = 3.0  # a heartbeat every second
    llm.configure(delay=120.0)
    job_id = fake.add_job("long")
    node = make_node()
    task = await start(node)
    await wait_for(lambda: fake.watches, what="the node to try the watch")
    await wait_for(lambda: fake.heartbeats, what="a heartbeat")

    fake.cancelled.add(job_id)

    await wait_for(lambda: node.running_jobs == 0, what="the heartbeat to abort the job")
    assert node.summary.aborted == 1
    llm.configure(delay=0.0)
    other = fake.add_job("next")
    await wait_for(lambda: other in fake.results(), what="the next job")
    node.stop()
    await task
    # Asked once, not in a loop; said once, in the log.
    assert len(fake.watches) == 1
    assert "no lease watch" in caplog.text
    assert job_id not in fake.outcomes


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[str], QueueClient]]:
    clients: list[QueueClient] = []

    def build(url: str) -> QueueClient:
        client = QueueClient(url, NODE_KEY, "n", fetch_wait=5.0)
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()


async def test_an_answer_about_an_old_lease_leaves_the_new_one_running(
    client_for: Callable[[str], QueueClient],
) -> None:
    # The job was leased to this node again while the watch was in flight.
    held = [LeaseRef(job_id="job-1", lease_token="old")]
    gone: list[tuple[list[str], str]] = []
    answered = asyncio.Event()

    def respond(request: Received) -> Reply:
        held[:] = [LeaseRef(job_id="job-1", lease_token="new")]
        return Reply(200, {"cancelled": ["job-1"], "lost": []})

    def on_gone(ids: Sequence[str], reason: str) -> None:
        gone.append((list(ids), reason))

    with LoopbackServer(respond) as server:
        watcher = LeaseWatcher(
            client_for(server.url),
            Backoff(0.05, 0.2),
            leases=lambda: list(held),
            on_gone=on_gone,
            wait=5.0,
            watch_after=0.0,
        )
        running = asyncio.create_task(watcher.run())
        await wait_for(lambda: watcher.answered >= 1, what="the watch's answer")
        answered.set()
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert gone == []
    assert server.bodies(WATCH)[0]["leases"] == [{"job_id": "job-1", "lease_token": "old"}]


async def test_a_lease_that_joins_renews_the_watch(
    client_for: Callable[[str], QueueClient],
) -> None:
    held = [LeaseRef(job_id="job-1", lease_token="t1")]
    watched: list[list[str]] = []

    def respond(request: Received) -> Reply | None:
        watched.append([ref["job_id"] for ref in request.json()["leases"]])
        while not request.gone():  # a watch with no news: held until the node hangs up
            asyncio.run(asyncio.sleep(0.01))
        return None

    with LoopbackServer(respond) as server:
        watcher = LeaseWatcher(
            client_for(server.url),
            Backoff(0.05, 0.2),
            leases=lambda: list(held),
            on_gone=lambda ids, reason: None,
            wait=5.0,
            watch_after=0.1,
        )
        running = asyncio.create_task(watcher.run())
        await wait_for(lambda: watched == [["job-1"]], what="the first watch")
        held.append(LeaseRef(job_id="job-2", lease_token="t2"))
        watcher.wake()
        await wait_for(lambda: len(watched) >= 2, what="the watch to be renewed")
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert watched[1] == ["job-1", "job-2"]


async def test_leases_joining_in_quick_succession_renew_the_watch_once(
    client_for: Callable[[str], QueueClient],
) -> None:
    held = [LeaseRef(job_id="job-1", lease_token="t1")]
    watched: list[list[str]] = []

    def respond(request: Received) -> Reply | None:
        watched.append([ref["job_id"] for ref in request.json()["leases"]])
        while not request.gone():
            asyncio.run(asyncio.sleep(0.01))
        return None

    with LoopbackServer(respond) as server:
        watcher = LeaseWatcher(
            client_for(server.url),
            Backoff(0.05, 0.2),
            leases=lambda: list(held),
            on_gone=lambda ids, reason: None,
            wait=5.0,
            watch_after=0.0,
            min_watch=3.0,  # one renewal per 3 s at most
        )
        running = asyncio.create_task(watcher.run())
        await wait_for(lambda: watched == [["job-1"]], what="the first watch")
        held.append(LeaseRef(job_id="job-2", lease_token="t2"))
        watcher.wake()
        await asyncio.sleep(0.05)  # the node's loop turns; job-3 arrives a moment later
        held.append(LeaseRef(job_id="job-3", lease_token="t3"))
        watcher.wake()
        await wait_for(lambda: len(watched) >= 2, what="the watch to be renewed")
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert watched[1] == ["job-1", "job-2", "job-3"]


async def test_leases_younger_than_watch_after_are_never_watched(
    client_for: Callable[[str], QueueClient],
) -> None:
    # Short jobs come and go without a single watch request.
    held: list[LeaseRef] = []
    watched: list[list[str]] = []

    def respond(request: Received) -> Reply:
        watched.append([ref["job_id"] for ref in request.json()["leases"]])
        return Reply(200, {"cancelled": [], "lost": []})

    with LoopbackServer(respond) as server:
        watcher = LeaseWatcher(
            client_for(server.url),
            Backoff(0.05, 0.2),
            leases=lambda: list(held),
            on_gone=lambda ids, reason: None,
            wait=5.0,
            watch_after=3.0,
        )
        running = asyncio.create_task(watcher.run())
        for n in range(20):
            held[:] = [LeaseRef(job_id=f"job-{n}", lease_token=f"t{n}")]
            watcher.wake()
            await asyncio.sleep(0.01)
        held.clear()
        watcher.wake()
        await asyncio.sleep(0.1)
        assert watched == []
        # One that stays long enough is watched: the test can tell.
        held[:] = [LeaseRef(job_id="job-long", lease_token="t-long")]
        watcher.wake()
        await wait_for(lambda: watched, what="the long lease to be watched")
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
    assert watched[0] == ["job-long"]


class FailingWatch:
    """A queue client whose lease watch fails (the server went down) when told to."""

    def __init__(self) -> None:
        self.failure: asyncio.Future[None] | None = None
        self.request: asyncio.Task[object] | None = None

    async def watch_leases(self, refs: Sequence[LeaseRef], wait: float) -> object:
        self.failure = asyncio.get_running_loop().create_future()
        self.request = asyncio.current_task()
        await self.failure
        raise AssertionError("unreachable")


async def test_a_watch_that_failed_just_before_its_cancel_leaves_no_unread_error() -> None:
    """At a shutdown while the server is down, no "Task exception was never retrieved"."""
    client = FailingWatch()
    held = [LeaseRef(job_id="job-1", lease_token="t-1")]
    watcher = LeaseWatcher(
        client,  # type: ignore[arg-type]
        Backoff(0.5, 1.0),
        leases=lambda: held,
        on_gone=lambda ids, reason: None,
        wait=25.0,
        watch_after=0.0,
    )
    task = asyncio.create_task(watcher.run())
    await wait_for(lambda: client.request is not None, what="the watch request")
    request = client.request
    assert client.failure is not None and request is not None
    client.failure.set_exception(ServerUnavailableError("cannot connect: connection refused"))
    # The request fails; the watch is cancelled before it hears of it.
    while not request.done():
        await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    # asyncio logs "Task exception was never retrieved" when a task whose
    # exception nobody read is collected. Here that would be at the process's
    # exit only (the cancelled wait keeps it alive until then), so the flag
    # that message is logged on is read instead.
    assert request._log_traceback is False
