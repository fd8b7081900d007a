"""Heartbeats: a third of the lease, every held lease, lost/cancelled reported back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
from conditions import wait_for
from fake_queue import NODE_KEY, FakeQueue, FakeQueueServer
from openbeepboop_node.backoff import Connectivity
from openbeepboop_node.heartbeat import Heartbeater
from openbeepboop_node.queue_client import QueueClient
from openbeepboop_schemas import LeaseRef

Make = Callable[..., tuple[Heartbeater, list[tuple[list[str], str]]]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    """Heartbeaters for ``url`` over ``held``; their clients are closed after the test."""
    clients: list[QueueClient] = []

    def build(
        url: str,
        held: list[LeaseRef],
        interval: float | None = None,
        lease_seconds: Callable[[], float | None] | None = None,
    ) -> tuple[Heartbeater, list[tuple[list[str], str]]]:
        client = QueueClient(url, NODE_KEY, "n")
        clients.append(client)
        gone: list[tuple[list[str], str]] = []

        def on_gone(ids: Sequence[str], reason: str) -> None:
            gone.append((list(ids), reason))
            held[:] = [ref for ref in held if ref.job_id not in ids]

        beater = Heartbeater(
            client,
            Connectivity(url),
            leases=lambda: list(held),
            lease_seconds=lease_seconds or (lambda: 0.3 if held else None),
            on_gone=on_gone,
            interval=interval,
        )
        return beater, gone

    yield build
    for client in clients:
        await client.aclose()


def test_period_is_a_third_of_the_lease_or_a_shorter_configured_interval(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    url = "http://127.0.0.1:9"  # never called
    held = [LeaseRef(job_id="j", lease_token="t")]
    beater, _ = make(url, held)
    assert beater.period() == pytest.approx(0.1)
    idle, _ = make(url, [])
    assert idle.period() is None
    shorter, _ = make(url, held, interval=0.05)
    assert shorter.period() == 0.05
    assert caplog.records == []
    # Longer than the leases allow: a ceiling only, said once.
    longer, _ = make(url, held, interval=5)
    assert longer.period() == pytest.approx(0.1)
    assert longer.period() == pytest.approx(0.1)
    assert [r.getMessage() for r in caplog.records] == [
        "heartbeat_interval = 5 s is longer than a third of the server's 0.3 s leases: "
        "heartbeats go every 0.1 s so that no lease expires under a running job"
    ]


async def test_idle_node_sends_nothing_then_beats_for_held_leases(
    fake: FakeQueue, served: FakeQueueServer, make: Make
) -> None:
    fake.lease_seconds = 0.3
    held: list[LeaseRef] = []
    beater, gone = make(served.url, held)
    task = asyncio.create_task(beater.run())
    await asyncio.sleep(0.2)
    assert fake.heartbeats == []
    fake.add_job("a")
    fake.add_job("b")
    for lease in fake._fetch({"node_id": "n", "models": ["standin"], "max_jobs": 2}):
        held.append(LeaseRef(job_id=str(lease["job_id"]), lease_token=str(lease["lease_token"])))
    beater.wake()
    await wait_for(lambda: len(fake.heartbeats) >= 2, what="two heartbeats")
    assert fake.heartbeats[0]["leases"] == [r.model_dump() for r in held]
    fake.cancelled.add("job-0001")
    fake.lost.add("job-0002")
    await wait_for(lambda: len(gone) == 2, what="both leases reported gone")
    assert sorted(gone) == [(["job-0001"], "cancelled"), (["job-0002"], "lost")]
    count = len(fake.heartbeats)
    await asyncio.sleep(0.3)
    assert len(fake.heartbeats) == count  # nothing held, nothing sent
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_shorter_lease_taken_while_waiting_is_heartbeated_in_its_own_time(
    fake: FakeQueue, served: FakeQueueServer, make: Make
) -> None:
    fake.add_job("a")
    fake.add_job("b")
    leases = fake._fetch({"node_id": "n", "models": ["standin"], "max_jobs": 2})
    first, second = (
        LeaseRef(job_id=str(x["job_id"]), lease_token=str(x["lease_token"])) for x in leases
    )
    held = [first]
    seconds = {first.job_id: 300.0, second.job_id: 0.3}
    beater, _ = make(
        served.url, held, lease_seconds=lambda: min(seconds[ref.job_id] for ref in held)
    )
    task = asyncio.create_task(beater.run())
    await asyncio.sleep(0)  # it now waits out a third of the 300 s lease
    held.append(second)
    beater.wake()
    await wait_for(lambda: fake.heartbeats, timeout=10, what="a heartbeat within the 0.3 s lease")
    assert fake.heartbeats[0]["leases"] == [ref.model_dump() for ref in held]
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_an_unreachable_server_does_not_stop_the_heartbeat(
    fake: FakeQueue, served: FakeQueueServer, make: Make
) -> None:
    fake.lease_seconds = 0.15
    fake.add_job("a")
    (lease,) = fake._fetch({"node_id": "n", "models": ["standin"], "max_jobs": 1})
    held = [LeaseRef(job_id=str(lease["job_id"]), lease_token=str(lease["lease_token"]))]
    beater, _ = make(served.url, held)
    fake.down = True
    task = asyncio.create_task(beater.run())
    await wait_for(lambda: len(fake.attempts) >= 2, what="attempts while down")
    fake.down = False
    await wait_for(lambda: fake.heartbeats, what="a heartbeat after the outage")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
