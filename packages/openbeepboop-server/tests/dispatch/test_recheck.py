"""The one periodic re-check: changes made behind the process's back reach parked long-polls.

"Another replica" is a second :class:`QueueService` on the same SQLite file:
its writes never touch the app's wake-ups, so only the re-check can tell the
parked polls. Driven through httpx's ASGI transport in one event loop, as in
tests/http/test_http_longpoll.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import sqlalchemy as sa
from openbeepboop_schemas import ChatCompletionRequest, Role
from openbeepboop_server.app import create_app
from openbeepboop_server.context import ServerContext
from openbeepboop_server.db.database import Database
from openbeepboop_server.db.migrate import upgrade_to_head
from openbeepboop_server.db.tables import nodes
from openbeepboop_server.dispatch import recheck
from openbeepboop_server.dispatch.recheck import Rechecker
from openbeepboop_server.dispatch.waiting import poll_entries
from openbeepboop_server.keys import Caller, KeyService
from openbeepboop_server.queue.policy import QueuePolicy
from openbeepboop_server.queue.service import QueueService
from starlette.applications import Starlette

from tests.support.surface import bearer, chat, make_settings
from tests.support.waiting import eventually

WAIT = 20.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class World:
    app: Starlette
    http: httpx.AsyncClient
    context: ServerContext
    user: str
    user_caller: Caller
    node: str
    #: The other replica: same database, none of the app's wake-ups.
    other: QueueService


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    settings = make_settings(tmp_path)
    upgrade_to_head(settings.database.url)
    app = create_app(settings)
    other_db = Database.connect(settings.database.url)
    async with app.router.lifespan_context(app):
        context: ServerContext = app.state.context
        context.recheck_seconds = 0.1
        user = context.keys.create(Role.USER, "u")[0]
        caller = context.keys.authenticate(user)
        assert caller is not None
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield World(
                app=app,
                http=http,
                context=context,
                user=user,
                user_caller=caller,
                node=context.keys.create(Role.NODE, "n")[0],
                other=QueueService(other_db, QueuePolicy()),
            )
    other_db.dispose()


async def _submit(world: World, model: str = "m") -> str:
    response = await world.http.post(
        "/v1/chat/completions", json=chat(model), headers=bearer(world.user)
    )
    job_id: str = response.json()["id"]
    return job_id


async def _parked_fetch(world: World, node_id: str) -> asyncio.Future[httpx.Response]:
    """A fetch long-poll for model ``m``, once it is parked."""
    fetch = asyncio.ensure_future(
        world.http.post(
            "/internal/queue/fetch",
            json={"node_id": node_id, "models": ["m"], "wait": WAIT},
            headers=bearer(world.node),
        )
    )
    await eventually(lambda: world.context.wakeups.parked_fetch_waiters == 1, "the fetch to park")
    return fetch


@pytest.mark.anyio
async def test_a_poll_learns_of_a_job_another_replica_cancelled(world: World) -> None:
    job_id = await _submit(world)
    poll = asyncio.ensure_future(
        world.http.post(
            "/v1/results/poll", json={"ids": [job_id], "wait": WAIT}, headers=bearer(world.user)
        )
    )
    await eventually(lambda: world.context.wakeups.watch_waiters == 1, "the poll to park")
    started = time.monotonic()
    world.other.cancel(world.user_caller, job_id)

    response = await poll

    assert response.json()[0]["status"] == "CANCELLED"
    assert time.monotonic() - started < WAIT / 2


@pytest.mark.anyio
async def test_a_parked_fetch_learns_of_a_job_another_replica_queued(world: World) -> None:
    fetch = await _parked_fetch(world, "far-node")
    started = time.monotonic()
    [job] = world.other.submit_many(
        world.user_caller, [ChatCompletionRequest.model_validate(chat("m"))]
    )

    response = await fetch

    assert [lease["job_id"] for lease in response.json()] == [job.id]
    assert time.monotonic() - started < WAIT / 2


@pytest.mark.anyio
async def test_a_poll_that_skips_its_first_read_still_sees_a_job_already_finished(
    world: World,
) -> None:
    # A synchronous chat parks on the job it just queued without reading it
    # (known_live). Should the job end before the waiter is registered, no
    # wake-up will ever come for it: the re-check must answer the poll.
    job_id = await _submit(world)
    world.other.cancel(world.user_caller, job_id)

    @contextlib.asynccontextmanager
    async def no_disconnect(_waiter: object) -> AsyncIterator[None]:
        yield

    started = time.monotonic()
    [entry] = await poll_entries(
        world.context, world.user_caller, [job_id], WAIT, no_disconnect, known_live=True
    )

    assert entry.status == "CANCELLED"
    assert time.monotonic() - started < WAIT / 2


class SpyQueue:
    """The queue's re-check reads, counted (the app's own rounds go on undisturbed)."""

    def __init__(self, queue: QueueService) -> None:
        self.queue = queue
        self.calls: list[tuple[str, object]] = []

    def finished_among(self, ids: list[str]) -> list[str]:
        self.calls.append(("finished_among", len(ids)))
        return self.queue.finished_among(ids)

    def claimable_models(self, demand: dict[str, int]) -> list[str]:
        self.calls.append(("claimable_models", demand))
        return self.queue.claimable_models(demand)

    def touch_nodes(self, node_ids: list[str]) -> None:
        self.calls.append(("touch_nodes", node_ids))
        self.queue.touch_nodes(node_ids)

    @property
    def policy(self) -> QueuePolicy:
        return self.queue.policy


class SpyKeys:
    """The key service's re-check read, counted into the queue spy's calls."""

    def __init__(self, keys: KeyService, calls: list[tuple[str, object]]) -> None:
        self.keys = keys
        self.calls = calls

    def refused_among(self, key_ids: list[int]) -> set[int]:
        self.calls.append(("refused_among", len(key_ids)))
        return self.keys.refused_among(key_ids)


def spied(world: World) -> tuple[Rechecker, SpyQueue]:
    spy = SpyQueue(world.context.queue)
    context = SimpleNamespace(
        wakeups=world.context.wakeups,
        queue=spy,
        keys=SpyKeys(world.context.keys, spy.calls),
        recheck_seconds=1.0,
    )
    return Rechecker(context), spy  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_one_read_per_round_for_any_number_of_parked_polls(world: World) -> None:
    job_ids = [await _submit(world) for _ in range(3)]
    polls = [
        asyncio.ensure_future(
            world.http.post(
                "/v1/results/poll",
                json={"ids": [job_ids[n % 3]], "wait": WAIT},
                headers=bearer(world.user),
            )
        )
        for n in range(60)
    ]
    await eventually(lambda: world.context.wakeups.watch_waiters == 60, "every poll to park")
    checker, spy = spied(world)

    await checker.check()

    # One read of the one key waiting and one of the three distinct ids, not one per poll.
    assert spy.calls == [("refused_among", 1), ("finished_among", 3)]
    for job_id in job_ids:
        await world.http.post(f"/v1/jobs/{job_id}/cancel", headers=bearer(world.user))
    answers = await asyncio.gather(*polls)
    assert {answer.json()[0]["status"] for answer in answers} == {"CANCELLED"}


@pytest.mark.anyio
async def test_nothing_is_read_while_nothing_is_parked(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recheck, "NODE_TOUCH_SECONDS", 0.0)
    checker, spy = spied(world)

    await checker.check()

    assert spy.calls == []


@pytest.mark.anyio
async def test_a_poll_of_finished_and_live_jobs_watches_only_the_live_one(world: World) -> None:
    finished, live = await _submit(world), await _submit(world)
    await world.http.post(f"/v1/jobs/{finished}/cancel", headers=bearer(world.user))
    poll = asyncio.ensure_future(
        world.http.post(
            "/v1/results/poll",
            json={"ids": [finished, live], "wait": WAIT},
            headers=bearer(world.user),
        )
    )
    await eventually(lambda: world.context.wakeups.watched_ids() == [live], "the poll to narrow")
    await world.http.post(f"/v1/jobs/{live}/cancel", headers=bearer(world.user))
    assert [entry["status"] for entry in (await poll).json()] == ["CANCELLED", "CANCELLED"]


@pytest.mark.anyio
async def test_a_node_parked_in_a_fetch_stays_seen(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recheck, "NODE_TOUCH_SECONDS", 0.0)
    fetch = await _parked_fetch(world, "idle-node")
    with world.context.db.write() as conn:
        conn.execute(nodes.update().values(last_seen=1.0))

    checker, spy = spied(world)
    await checker.check()

    assert ("touch_nodes", ["idle-node"]) in spy.calls
    with world.context.db.read() as conn:
        last_seen = conn.execute(sa.select(nodes.c.last_seen)).scalar_one()
    assert last_seen > time.time() - 60
    world.context.wakeups.close()
    assert (await fetch).json() == []


def test_a_short_freshness_window_is_touched_three_times_over() -> None:
    # An idle node is seen only through these touches: with a 6 s window and the
    # usual 10 s between touches it would drop out of /v1/models for 4 s in 10.
    assert recheck.node_touch_seconds(6.0) == 2.0
    assert recheck.node_touch_seconds(150.0) == recheck.NODE_TOUCH_SECONDS


def test_rounds_take_turns_over_a_flood_of_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recheck, "MAX_IDS_PER_CHECK", 4)
    checker = Rechecker(None)  # type: ignore[arg-type]
    ids = [str(n) for n in range(10)]
    rounds: Iterator[list[str]] = (checker._next_ids(ids) for _ in range(4))
    assert list(rounds) == [ids[0:4], ids[4:8], ids[8:10], ids[0:4]]
