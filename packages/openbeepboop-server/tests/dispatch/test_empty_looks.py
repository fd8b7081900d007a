"""An idle node asking again while nothing changed parks without a claim (dispatch/empty_looks.py).

Whatever the skipped claim would have found reaches the node anyway: changes
made here bump the wake-ups' generation (the next fetch looks), and changes
made behind the process's back (``world.other``, a second service on the
same file) are found by the periodic re-check, as for any parked fetch.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from openbeepboop_schemas import ChatCompletionRequest, FetchRequest
from openbeepboop_server.dispatch.empty_looks import EmptyLooks, look_key
from openbeepboop_server.keys import Caller

from tests.dispatch import test_recheck
from tests.dispatch.test_recheck import WAIT, World, _submit, spied
from tests.support.surface import bearer, chat

#: The app with a second service on its file ("another replica"), as the re-check's tests use it.
world = test_recheck.world

#: A fetch's wait that ends soon, empty (the node then asks again).
SHORT = 0.2


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def claims(world: World, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The node ids the app's queue claimed for, in order."""
    made: list[str] = []
    claim = world.context.queue.claim

    def counted(caller: Caller, fetch: FetchRequest) -> Any:
        made.append(fetch.node_id)
        return claim(caller, fetch)

    monkeypatch.setattr(world.context.queue, "claim", counted)
    return made


async def _fetch(world: World, wait: float, models: list[str] | None = None) -> httpx.Response:
    body = {"node_id": "idle", "models": models or ["m"], "wait": wait}
    return await world.http.post("/internal/queue/fetch", json=body, headers=bearer(world.node))


@pytest.mark.anyio
async def test_an_idle_node_asking_again_while_nothing_changed_claims_nothing(
    world: World, claims: list[str]
) -> None:
    assert (await _fetch(world, SHORT)).json() == []
    assert (await _fetch(world, SHORT)).json() == []
    assert claims == ["idle"]
    # Another model set is another question: it is asked.
    assert (await _fetch(world, SHORT, ["m", "other"])).json() == []
    assert claims == ["idle", "idle"]


@pytest.mark.anyio
async def test_a_job_submitted_here_is_claimed_by_the_next_fetch(
    world: World, claims: list[str]
) -> None:
    assert (await _fetch(world, SHORT)).json() == []
    job_id = await _submit(world)
    leases = (await _fetch(world, WAIT)).json()
    assert [lease["job_id"] for lease in leases] == [job_id]
    assert claims == ["idle", "idle"]


@pytest.mark.anyio
async def test_a_job_queued_behind_the_process_back_reaches_a_node_that_skipped_its_claim(
    world: World, claims: list[str]
) -> None:
    assert (await _fetch(world, SHORT)).json() == []
    fetch = asyncio.ensure_future(_fetch(world, WAIT))
    wakeups = world.context.wakeups
    while wakeups.parked_fetch_waiters != 1:
        await asyncio.sleep(0.005)
    assert claims == ["idle"]  # parked without asking
    [job] = world.other.submit_many(
        world.user_caller, [ChatCompletionRequest.model_validate(chat("m"))]
    )
    leases = (await fetch).json()
    assert [lease["job_id"] for lease in leases] == [job.id]


@pytest.mark.anyio
async def test_news_lost_from_other_replicas_makes_every_node_look_again(
    world: World, claims: list[str]
) -> None:
    assert (await _fetch(world, SHORT)).json() == []
    checker, _ = spied(world)
    checker.kick()  # what a reconnected listener does
    assert (await _fetch(world, SHORT)).json() == []
    assert claims == ["idle", "idle"]


def _request(node: str = "n", version: str | None = None, serves: list[str] | None = None) -> Any:
    return FetchRequest(node_id=node, models=["m"], version=version, serves=serves)


def test_a_look_holds_for_the_same_question_at_the_same_generation_before_its_backoff() -> None:
    caller: Any = SimpleNamespace(key_id=1)
    looks = EmptyLooks()
    key = look_key(caller, _request())
    looks.remember(key, 7, wake_at=100.0)
    assert looks.unchanged(key, 7, now=99.0) is not None
    assert looks.unchanged(key, 8, now=99.0) is None  # something changed since
    assert looks.unchanged(key, 7, now=100.0) is None  # a backoff ended
    for other in (_request("n2"), _request(version="2"), _request(serves=["m", "x"])):
        assert looks.unchanged(look_key(caller, other), 7, now=99.0) is None
    assert looks.unchanged(look_key(SimpleNamespace(key_id=2), _request()), 7, now=99.0) is None  # type: ignore[arg-type]
    looks.forget(key)
    assert looks.unchanged(key, 7, now=99.0) is None
