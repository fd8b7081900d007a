"""A model whose backend cannot be connected to is paused; its jobs go back unharmed.

Against the fake queue (loopback HTTP), real LiteLLM, the stand-in LLM for the
live model and a closed loopback port for the dead one, where a second
stand-in is started later (the backend coming up).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conditions import wait_for
from conftest import PROVIDER_KEY
from fake_queue import FakeQueue
from openbeepboop_node.worker import Node
from openbeepboop_testkit.standin import StandinLLM


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_port() -> int:
    return closed_port()


@pytest.fixture
def revived() -> Iterator[list[StandinLLM]]:
    """Stand-ins a test starts on the dead port (stopped afterwards)."""
    started: list[StandinLLM] = []
    yield started
    for standin in started:
        standin.stop()


def two_models(llm: StandinLLM, dead_port: int) -> list[dict[str, Any]]:
    return [
        {
            "name": "dead",
            "litellm_model": "openai/dead-up",
            "api_base": f"http://127.0.0.1:{dead_port}/v1",
            "api_key": PROVIDER_KEY,
            "timeout": 20,
        },
        {
            "name": "live",
            "litellm_model": "openai/live-up",
            "api_base": llm.base_url,
            "api_key": PROVIDER_KEY,
            "timeout": 20,
        },
    ]


def queued(fake: FakeQueue) -> set[str]:
    with fake.lock:
        return {job[0] for job in fake.queued}


def pause_logs(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    messages = [r.getMessage() for r in caplog.records if r.name.endswith("backend_health")]
    paused = sum("cannot be reached" in m for m in messages)
    back = sum("answers again" in m for m in messages)
    return paused, back


async def test_a_dead_backend_costs_its_jobs_nothing_and_the_live_model_keeps_working(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    dead_port: int,
    revived: list[StandinLLM],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    dead = [fake.add_job(f"dead {i}", model="dead") for i in range(6)]
    live = [fake.add_job(f"live {i}", model="live") for i in range(4)]
    node = make_node(models=two_models(llm, dead_port), backend_probe_max=0.3)
    task = asyncio.create_task(node.run())

    await wait_for(lambda: set(live) <= set(fake.results()), what="the live model's results")
    await wait_for(lambda: queued(fake) == set(dead), what="every dead job queued again")
    await wait_for(lambda: fake.fetches[-1]["models"] == ["live"], what="a fetch without 'dead'")
    assert node.health.paused == ["dead"]
    assert fake.errors() == {}  # no job failed: no attempt was spent on the dead backend
    assert fake.released  # the ones it had fetched went back; the paused model is not asked for
    later = len(fake.fetches)
    live_more = [fake.add_job(f"live more {i}", model="live") for i in range(3)]
    await wait_for(lambda: set(live_more) <= set(fake.results()), what="more live results")
    assert all(f["models"] == ["live"] for f in fake.fetches[later:])
    assert all(hb["models"] == ["live"] for hb in fake.heartbeats[-1:])

    revived.append(StandinLLM(port=dead_port).start())  # the backend comes up
    await wait_for(lambda: set(dead) <= set(fake.results()), what="the dead model's results")
    node.stop()
    await task
    assert fake.errors() == {}
    assert revived[0].prompt_counts() == {f"dead {i}": 1 for i in range(6)}
    assert node.health.paused == []
    assert pause_logs(caplog) == (1, 1)  # once each, not per job


async def test_batch_hands_the_jobs_back_and_names_the_dead_backend(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node], dead_port: int
) -> None:
    dead = [fake.add_job(f"dead {i}", model="dead") for i in range(5)]
    live = [fake.add_job(f"live {i}", model="live") for i in range(3)]
    node = make_node(
        models=two_models(llm, dead_port), batch_backend_wait=0.5, backend_probe_max=0.2
    )
    summary = await node.run_batch()
    assert summary.backends_down == ["dead"]
    assert summary.completed == 3 and summary.failed == 0
    assert summary.backend_released >= 5
    assert set(live) == set(fake.results())
    assert queued(fake) == set(dead)
    assert fake.errors() == {}


async def test_batch_waits_for_a_backend_that_comes_back(
    fake: FakeQueue,
    llm: StandinLLM,
    make_node: Callable[..., Node],
    dead_port: int,
    revived: list[StandinLLM],
) -> None:
    dead = [fake.add_job(f"dead {i}", model="dead") for i in range(4)]
    node = make_node(
        models=two_models(llm, dead_port), batch_backend_wait=60, backend_probe_max=0.2
    )
    batch = asyncio.create_task(node.run_batch())
    await wait_for(lambda: node.health.paused == ["dead"], what="the pause")
    revived.append(StandinLLM(port=dead_port).start())
    summary = await batch
    assert summary.backends_down == []
    assert set(fake.results()) == set(dead)
    assert fake.errors() == {}


async def test_prefetched_leases_of_a_paused_model_go_back_without_a_call(
    fake: FakeQueue, llm: StandinLLM, make_node: Callable[..., Node], dead_port: int
) -> None:
    # One slot, busy with a slow live job; a dead model's lease waits for it.
    llm.configure(delay=3.0)
    fake.add_job("live slow", model="live")
    node = make_node(models=two_models(llm, dead_port), concurrency=1, prefetch=4)
    task = asyncio.create_task(node.run())
    await wait_for(lambda: len(llm.calls()) == 1, what="the slow live call")
    waiting = fake.add_job("dead waiting", model="dead")
    await wait_for(lambda: node.held_jobs == 2, what="the dead lease waiting for the slot")
    node.health.pause("dead", "a test says so")
    await wait_for(lambda: waiting in fake.released, what="the waiting lease handed back")
    assert llm.answered_calls() == []  # handed back at once, not when the slot freed
    node.stop()
    await task
    assert fake.errors() == {}
    assert node.summary.backend_released == 1
